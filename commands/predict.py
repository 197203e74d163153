"""``--mode predict``: the top-5 classes (names and probabilities) of image files."""
from datasets import dataset_mean_std, eval_transform, resolve_class_names
from utils.errors import ConfigError
from utils.predict import expand_image_paths, format_predictions, predict as predict_images

from .common import load_if_available, runtime_model


def predict(ctx) -> list:
    cfg = ctx.config
    if not cfg.images:
        raise ConfigError("predict needs images: add --images a.jpg b.png (files or folders)")
    deployed = runtime_model(ctx)
    if deployed is None:
        path = load_if_available(ctx)
        if path is not None:
            ctx.logger.info(f"predicting with {path} ({cfg.model}, {ctx.num_classes} classes)")
    transform = eval_transform(ctx.eval_cfg, *dataset_mean_std(cfg.dataset))
    names = resolve_class_names(ctx.num_classes, ctx.loaded_checkpoint, cfg.dataset, cfg.data_root)
    results = predict_images(deployed or ctx.model, expand_image_paths(cfg.images), transform, names, topk=5,
                             device=ctx.device, max_pixels=cfg.max_image_pixels, bad_images=cfg.bad_images)
    print(format_predictions(results))
    return results
