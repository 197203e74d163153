"""The DetectionAgent's modes besides train (one function each): validate, predict, export, benchmark, flops."""
import os
import statistics

import torch

from deploy.timing import time_calls
from utils.errors import CheckpointError

__all__ = ["DETECTION_COMMANDS"]


def _load(ctx):
    """Load the agent's checkpoint (``--checkpoint``, else the experiment's best/last) into ``ctx.model``;
    without one, warn that the weights are random."""
    if ctx.source is None:
        ctx.logger.warning(f"no checkpoint in {ctx.dirs.checkpoints} and none given: the detector weights are "
                           f"RANDOM; pass --checkpoint PATH")
        return None
    path, state = ctx.source
    if state is None:
        raise CheckpointError(f"{path} is not a detection checkpoint of this project; pass a checkpoint that "
                              f"DetectionAgent training wrote (<exp>/checkpoints/best.pth)")
    ctx.model.load_state_dict(state["ema"] if ctx.config.use_ema_weights and state.get("ema") else state["model"])
    ctx.loaded_checkpoint = state
    return path


def _out(ctx, name: str) -> str:
    return os.path.join(ctx.dirs.out, name)


def validate(ctx) -> dict:
    """COCO box AP of the checkpoint on the val split; prints pycocotools' lines, writes out/coco_eval.json."""
    from engine.detection import evaluate_detector, write_coco_eval
    path = _load(ctx)
    lines = []
    metrics, results = evaluate_detector(ctx.model, ctx.loaders[1], ctx.device, ctx.dist, summary=lines)
    if ctx.dist.is_main:
        print("\n".join(lines))
        print(" ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
        write_coco_eval(_out(ctx, "coco_eval.json"), metrics, results, checkpoint=path)
        ctx.logger.info(f"wrote {_out(ctx, 'coco_eval.json')}")
    return metrics


def predict(ctx) -> list:
    """Boxes, class names and scores of image files: printed, and drawn into out/<name>.png."""
    from torchvision.transforms.functional import to_tensor
    from utils.draw import draw_detections
    from utils.errors import ConfigError
    from utils.predict import decode_images, expand_image_paths
    cfg = ctx.config
    if not cfg.images:
        raise ConfigError("predict needs images: add --images a.jpg b.png (files or folders)")
    path = _load(ctx)
    if path is not None:
        ctx.logger.info(f"predicting with {path} ({cfg.detector}, backbone {cfg.model}, {ctx.num_classes} classes)")
    names = ctx.class_names()
    ctx.model.eval()
    rows = []
    for path, image in decode_images(expand_image_paths(cfg.images), cfg.max_image_pixels, cfg.bad_images):
        with torch.no_grad():
            out = ctx.model([to_tensor(image).to(ctx.device)])[0]
        keep = out["scores"] >= cfg.predict_score_threshold
        boxes, labels, scores = out["boxes"][keep].cpu(), out["labels"][keep].cpu(), out["scores"][keep].cpu()
        png = _out(ctx, os.path.splitext(os.path.basename(path))[0] + ".png")
        draw_detections(image, boxes, labels, scores, names, png)
        print(f"{path}: {len(boxes)} detection(s) -> {png}")
        for b, label, s in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            print(f"  {names[label - 1]:<16} {s:.3f}  [{', '.join(f'{v:.1f}' for v in b)}]")
            rows.append({"image": path, "class": names[label - 1], "score": s, "box": b})
    return rows


def _size(ctx):
    return (3, max(ctx.config.min_size), ctx.config.max_size)


def export(ctx) -> dict:
    """ONNX of the whole detector (eval mode) with onnxruntime parity at the configured size."""
    from graphs.detection.export import export_detector_onnx
    _load(ctx)
    info = export_detector_onnx(ctx.model.cpu(), _out(ctx, "model.onnx"), image_size=_size(ctx))
    print(f"wrote {info['path']} (opset {info['opset']}); onnxruntime parity: max box diff "
          f"{info['max_box_diff']:.2e}, max score diff {info['max_score_diff']:.2e}")
    return info


def benchmark(ctx) -> dict:
    """Median latency of one eval-mode inference of a (3, min_size, max_size) image."""
    _load(ctx)
    model = ctx.model.eval()
    x = [torch.rand(_size(ctx), device=ctx.device)]
    with torch.no_grad():      # one warm-up call, five timed
        median = statistics.median(time_calls(lambda: model(x), 1, 5, ctx.device))
    print(f"{ctx.config.detector} + {ctx.config.model}: {median:.1f} ms per image at "
          f"{_size(ctx)[1]}x{_size(ctx)[2]} on {ctx.device}")
    return {"latency_ms": median, "size": _size(ctx)}


def flops(ctx) -> dict:
    """Backbone FLOPs (network and FPN body) at 224x224 under the family's counting rule."""
    from graphs.detection.flops import backbone_flops
    cfg = ctx.config
    info = backbone_flops(cfg.model, fpn_reductions=tuple(cfg.fpn_reductions), converted=ctx.model.is_converted or None)
    print(f"{cfg.model} ({info['rule']} rule, 224x224): network {info['model_flops'] / 1e6:.1f}M FLOPs, "
          f"body {info['body_flops'] / 1e6:.1f}M FLOPs")
    return info


DETECTION_COMMANDS = {"validate": validate, "predict": predict, "export": export, "benchmark": benchmark,
                      "flops": flops}
