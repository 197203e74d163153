"""``--mode predict``: the top-5 classes (names and probabilities) of image files, and the helpers it is
built from: image paths, decoding, batching, top-k (detection's predict shares the first two).

Typical use of the helpers (what ``--mode predict`` does; the transform and the class names come from
``datasets``: ``eval_transform`` and ``class_names_for``)::

    for path, top in predict_images(model, paths, transform, names, topk=5):
        print(path, top)                                              # [(name, prob), ...]
"""
import os

import torch

from datasets import dataset_mean_std, eval_transform, resolve_class_names
from datasets.decode import DEFAULT_MAX_PIXELS, bad_image, decode_image, image_extensions
from utils.errors import ConfigError, DataError

from .common import load_if_available, runtime_model

__all__ = ["predict", "predict_images", "decode_images", "expand_image_paths", "format_predictions"]


# ------------------------------------------------------------------------------------ images
def expand_image_paths(paths):
    """Files and folders -> a list of image files (a folder contributes its image files, sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    exts = image_extensions()
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if n.lower().endswith(exts) and os.path.isfile(os.path.join(p, n)))
            if not found:
                raise DataError(f"folder {p!r} holds no image files ({', '.join(exts[:4])}, ...)")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise DataError(f"image {p!r} does not exist; check the path")
    return out


def decode_images(paths, max_pixels=DEFAULT_MAX_PIXELS, bad_images="error"):
    """(path, RGB PIL image) of each of ``paths`` that decodes (:func:`datasets.decode.decode_image`); the
    others raise DataError (``bad_images`` 'error') or are skipped with one warning each ('skip'); DataError
    when none of them decodes."""
    decoded = 0
    for path in paths:
        try:
            image = decode_image(path, max_pixels)
        except DataError as e:
            bad_image(str(e), bad_images)
            continue
        decoded += 1
        yield path, image
    if paths and not decoded:
        raise DataError(f"none of the {len(paths)} image(s) could be read (each is named above); "
                        f"replace or delete them")


# ------------------------------------------------------------------------------------ prediction
def predict_images(model, image_paths, transform, class_names, topk=5, device="cpu", batch_size=32, *,
                   max_pixels=DEFAULT_MAX_PIXELS, bad_images="error"):
    """Top-``topk`` (class name, probability) of every image, in input order.

    Images are decoded by :func:`decode_images` (``max_pixels``; an unreadable one raises DataError, or
    with ``bad_images`` 'skip' is left out after one warning), transformed, batched by ``batch_size`` and
    classified in eval mode under ``torch.inference_mode`` with softmax probabilities; pairs are sorted by
    decreasing probability. ``model`` is moved to ``device`` and its train/eval mode is restored
    afterwards. Returns ``[(path, [(name, prob), ...]), ...]`` for the images that were read.
    """
    paths = [os.fspath(p) for p in ([image_paths] if isinstance(image_paths, (str, os.PathLike)) else image_paths)]
    if not isinstance(topk, int) or topk < 1:
        raise ConfigError(f"topk must be a positive integer, got {topk!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    device = torch.device(device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    model.to(device)
    was_training = model.training
    model.eval()
    results, chunk = [], []

    def classify():
        x = torch.stack([transform(image) for _, image in chunk]).to(device=device, dtype=dtype)
        with torch.inference_mode():
            out = model(x)
            if isinstance(out, (list, tuple)):
                out = out[0]
            probs = torch.softmax(out.float(), dim=1).cpu()
        if probs.shape[1] != len(class_names):
            raise ConfigError(f"the model has {probs.shape[1]} outputs but {len(class_names)} class names "
                              f"were given; set num_classes/dataset to match the checkpoint")
        values, indices = probs.topk(min(topk, probs.shape[1]), dim=1)
        for (p, _), v, i in zip(chunk, values.tolist(), indices.tolist()):
            results.append((p, [(class_names[j], float(q)) for j, q in zip(i, v)]))
        chunk.clear()

    try:
        for item in decode_images(paths, max_pixels, bad_images):
            chunk.append(item)
            if len(chunk) == batch_size:
                classify()
        if chunk:
            classify()
    finally:
        model.train(was_training)
    return results


def format_predictions(results, digits=4):
    """Text lines ``path: name (prob), name (prob), ...`` for :func:`predict_images` results."""
    lines = []
    for path, top in results:
        lines.append(f"{path}: " + ", ".join(f"{n} ({p:.{digits}f})" for n, p in top))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the command
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
