"""Classify image files with a trained model: loading, the eval transform, class names, top-k.

Typical use (what ``main.py --mode predict`` does)::

    transform = eval_transform(model.data_cfg, mean=..., std=...)     # the data set's constants
    names = class_names_for(config.dataset, num_classes, config.data_root)
    for path, top in predict(model, paths, transform, names, topk=5):
        print(path, top)                                              # [(name, prob), ...]
"""
import os
import pickle

import torch

from utils.errors import ConfigError, DataError

__all__ = ["load_image", "eval_transform", "class_names_for", "predict", "expand_image_paths",
           "format_predictions", "CIFAR10_CLASSES", "CIFAR100_CLASSES", "CIFAR10_MEAN", "CIFAR10_STD"]

CIFAR10_MEAN = (0.4914, 0.4824, 0.4467)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# The CIFAR-100 fine labels in label-index order (the order of ``fine_label_names`` in ``meta``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)


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


def _spatial(input_size):
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) == 3:
        size = size[1:]
    elif len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"input_size must be an int, (H, W) or (C, H, W) of positive integers, got {input_size!r}")
    return size


def eval_transform(data_cfg, input_size=None, crop_pct=None, interpolation=None, mean=None, std=None):
    """PIL image -> normalised float32 CHW tensor, the evaluation pipeline of ``data_cfg``.

    Resize(floor(size / crop_pct), interpolation) -> CenterCrop(size) -> [0, 1] float -> Normalize(mean,
    std). It reuses ``datasets.transforms.build_eval_transform`` (the same resize/crop as validation) and
    adds the float conversion and normalisation that the data loaders do on the device. Arguments left
    None come from ``data_cfg`` (keys input_size, crop_pct, interpolation, mean, std); CIFAR-style
    configs (mean/std None) use the ``mean``/``std`` given, else CIFAR-10's constants; with crop_pct 1.0
    and size 32 this is Resize(32) + CenterCrop(32).
    """
    from torchvision import transforms as T

    from datasets.transforms import build_eval_transform  # lazy: utils must not need datasets to import

    cfg = dict(data_cfg or {})
    size = _spatial(input_size if input_size is not None else cfg.get("input_size", (3, 224, 224)))
    crop_pct = float(crop_pct if crop_pct is not None else (cfg.get("crop_pct") or 1.0))
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    interpolation = interpolation or cfg.get("interpolation") or "bilinear"
    mean = tuple(mean if mean is not None else (cfg.get("mean") or CIFAR10_MEAN))
    std = tuple(std if std is not None else (cfg.get("std") or CIFAR10_STD))
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise ConfigError(f"mean {mean} and std {std} must have the same length and std must be positive")
    base = build_eval_transform(size, crop_pct=crop_pct, interpolation=interpolation)
    return T.Compose(list(base.transforms) + [T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)])


# ------------------------------------------------------------------------------------ class names
def _cifar_meta_names(data_root, folder, meta, key, n):
    if not data_root:
        return None
    path = os.path.join(os.fspath(data_root), folder, meta)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
        names = obj.get(key, obj.get(key.encode())) if isinstance(obj, dict) else None
        names = [x.decode("latin1") if isinstance(x, bytes) else str(x) for x in names]
    except Exception:  # a corrupt meta file: the standard names are just as good for printing
        return None
    return names if len(names) == n else None


def class_names_for(dataset, num_classes, data_root=None):
    """Human-readable names of the ``num_classes`` outputs of a model trained on ``dataset``.

    imagenet with 1000 classes: torchvision's bundled ImageNet-1k category names (no download).
    cifar10 / cifar100: ``label_names`` / ``fine_label_names`` from ``<data_root>/cifar-10-batches-py/
    batches.meta`` / ``cifar-100-python/meta`` when present, else the standard names. Anything else
    (synthetic, a class count that does not match): ``class_0``, ``class_1``, ...
    """
    n = int(num_classes)
    name = str(dataset or "").lower()
    if name == "imagenet" and n == 1000:
        try:
            from torchvision.models import ResNet50_Weights
            names = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
            if len(names) == 1000:
                return names
        except Exception:
            pass
    elif name == "cifar10" and n == 10:
        return _cifar_meta_names(data_root, "cifar-10-batches-py", "batches.meta", "label_names", 10) \
            or list(CIFAR10_CLASSES)
    elif name == "cifar100" and n == 100:
        return _cifar_meta_names(data_root, "cifar-100-python", "meta", "fine_label_names", 100) \
            or list(CIFAR100_CLASSES)
    return [f"class_{i}" for i in range(n)]


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
