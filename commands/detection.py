"""The DetectionAgent's modes besides train (one function each): validate, predict, export, benchmark, flops;
and the drawing of detections into a PNG that predict writes (:func:`draw_detections`)."""
import os
import statistics
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from deploy.timing import time_calls
from utils.atomic_io import atomic_write
from utils.errors import CheckpointError, ConfigError

__all__ = ["DETECTION_COMMANDS", "draw_detections"]


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

    from .predict import decode_images, expand_image_paths
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


# ------------------------------------------------------------------------------------ drawing
# Distinct colours for the classes (tab10), cycled.
_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _numpy(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def to_pil(image) -> Image.Image:
    """A PIL RGB image from a PIL image, a (3, H, W) float tensor in [0, 1] or uint8, or an HWC array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = _numpy(image)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a, "RGB")


def draw_detections(image, boxes, labels, scores, class_names: Sequence[str], path: str,
                    score_threshold: float = 0.0, label_offset: int = 1) -> Optional[str]:
    """Draw x1y1x2y2 ``boxes`` with ``class_names[label - label_offset]`` and the score; write ``path``.

    ``label_offset`` 1 is the detectors' convention (label 0 = background). Boxes under
    ``score_threshold`` are left out. The PNG appears complete or not at all. Returns ``path``.
    """
    img = to_pil(image).copy()
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for box, label, score in zip(_numpy(boxes).reshape(-1, 4).tolist(), _numpy(labels).tolist(),
                                 _numpy(scores).tolist()):
        if score < score_threshold:
            continue
        k = int(label) - label_offset
        name = class_names[k] if 0 <= k < len(class_names) else f"class {int(label)}"
        colour = _PALETTE[k % len(_PALETTE)]
        x1, y1, x2, y2 = box
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=2)
        text = f"{name} {score:.2f}"
        tx, ty = x1, max(0.0, y1 - 11)
        left, top, right, bottom = draw.textbbox((tx, ty), text, font=font)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=colour)
        draw.text((tx, ty), text, fill=(255, 255, 255), font=font)
    return atomic_write(path, lambda f: img.save(f, format="PNG"), "detection image")
