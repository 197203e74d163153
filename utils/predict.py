"""Classify image files with a trained model: loading, batching, top-k.

Typical use (what ``main.py --mode predict`` does; the transform and the class names come from
``datasets``: ``eval_transform`` and ``class_names_for``)::

    for path, top in predict(model, paths, transform, names, topk=5):
        print(path, top)                                              # [(name, prob), ...]
"""
import os

import torch

from utils.errors import ConfigError, DataError

__all__ = ["load_image", "predict", "expand_image_paths", "format_predictions"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


# ------------------------------------------------------------------------------------ images
def load_image(path):
    """Open ``path`` as an RGB PIL image (fully decoded); an unreadable file raises DataError."""
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"image {path!r} does not exist; check the path")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path!r} ({type(e).__name__}); the file is corrupt or not an "
                        f"image — replace or remove it") from None


def expand_image_paths(paths):
    """Files and folders -> a list of image files (a folder contributes its image files, sorted)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(os.path.join(p, n) for n in os.listdir(p)
                           if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, n)))
            if not found:
                raise DataError(f"folder {p!r} holds no image files ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)")
            out.extend(found)
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise DataError(f"image {p!r} does not exist; check the path")
    return out


# ------------------------------------------------------------------------------------ prediction
def predict(model, image_paths, transform, class_names, topk=5, device="cpu", batch_size=32):
    """Top-``topk`` (class name, probability) of every image, in input order.

    Images are loaded (:func:`load_image`, DataError for an unreadable file), transformed, batched by
    ``batch_size`` and classified in eval mode under ``torch.inference_mode`` with softmax
    probabilities; pairs are sorted by decreasing probability. ``model`` is moved to ``device`` and its
    train/eval mode is restored afterwards. Returns ``[(path, [(name, prob), ...]), ...]``.
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
    results = []
    try:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            x = torch.stack([transform(load_image(p)) for p in chunk]).to(device=device, dtype=dtype)
            with torch.inference_mode():
                out = model(x)
                if isinstance(out, (list, tuple)):
                    out = out[0]
                probs = torch.softmax(out.float(), dim=1).cpu()
            if probs.shape[1] != len(class_names):
                raise ConfigError(f"the model has {probs.shape[1]} outputs but {len(class_names)} class names "
                                  f"were given; set num_classes/dataset to match the checkpoint")
            k = min(topk, probs.shape[1])
            values, indices = probs.topk(k, dim=1)
            for p, v, i in zip(chunk, values.tolist(), indices.tolist()):
                results.append((p, [(class_names[j], float(q)) for j, q in zip(i, v)]))
    finally:
        model.train(was_training)
    return results


def format_predictions(results, digits=4):
    """Text lines ``path: name (prob), name (prob), ...`` for :func:`predict` results."""
    lines = []
    for path, top in results:
        lines.append(f"{path}: " + ", ".join(f"{n} ({p:.{digits}f})" for n, p in top))
    return "\n".join(lines)
