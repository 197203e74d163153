"""Data sets and loaders.

    train_loader, val_loader = build_loaders(config, data_cfg, device, rank=0, world_size=1)

``config`` holds the data keys (see notes/DESIGN.md, "Config"); ``data_cfg`` is the model's eval config
(input_size, crop_pct, interpolation, mean, std; mean/std None = the data set's constants). The loaders
yield ``(images, labels)`` on ``device`` and are described in :mod:`datasets.loader`.
"""
from datasets import cifar, coco, imagenet, synthetic
from datasets.loader import FolderLoader, InMemoryLoader, loader_settings, subset
from datasets.transforms import (IMAGENET_MEAN, IMAGENET_STD, build_eval_transform,
                                 build_train_transform, check_interpolation)
from utils.errors import ConfigError, DataError, closest

__all__ = ["build_loaders", "list_datasets", "DATASETS", "InMemoryLoader", "FolderLoader"]


def _mean_std(data_cfg, channels, default_mean, default_std):
    data_cfg = data_cfg or {}
    mean, std = data_cfg.get("mean"), data_cfg.get("std")
    mean = tuple(default_mean) if mean is None else tuple(mean)
    std = tuple(default_std) if std is None else tuple(std)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(f"mean/std need {channels} values for {channels}-channel images, "
                          f"got mean {mean} and std {std}")
    return mean, std


def _size(value, key):
    """input_size (int, [H, W] or [C, H, W]) -> (H, W)."""
    if isinstance(value, int):
        return value, value
    value = tuple(int(v) for v in value)
    if len(value) in (2, 3):
        return value[-2:]
    raise ConfigError(f"{key} must be an int, [H, W] or [C, H, W], got {value!r}")


def _in_memory(train, val, names, mean, std, s, device, rank, world_size, crop_padding, name):
    """Train and val InMemoryLoaders over (uint8 images, labels) pairs, honouring the subsets."""
    h, w = train[0].shape[-2:]
    if s["input_size"] is not None and _size(s["input_size"], "input_size") != (h, w):
        raise ConfigError(f"{name} images are {h}x{w} but input_size is {s['input_size']}; "
                          f"set input_size to null for this data set")
    n_train, n_val = subset(len(train[0]), s["train_subset"]), subset(len(val[0]), s["val_subset"])
    common = dict(device=device, mean=mean, std=std, rank=rank, world_size=world_size, seed=s["seed"],
                  pin_memory=s["pin_memory"], channels_last=s["channels_last"])
    train_loader = InMemoryLoader(train[0][:n_train], train[1][:n_train], names, train=True,
                                  batch_size=s["batch_size"], drop_last=s["drop_last"],
                                  crop_padding=crop_padding, hflip=s["hflip"], **common)
    val_loader = InMemoryLoader(val[0][:n_val], val[1][:n_val], names, train=False,
                                batch_size=s["val_batch_size"], **common)
    return train_loader, val_loader


def _build_cifar(name):
    def build(config, data_cfg, device, rank, world_size, s):
        tx, ty, vx, vy, names = cifar.load_cifar(name, s["data_root"], s["download"])
        mean, std = _mean_std(data_cfg, 3, cifar.MEAN[name], cifar.STD[name])
        return _in_memory((tx, ty), (vx, vy), names, mean, std, s, device, rank, world_size, 4, name)
    build.__name__ = f"build_{name}"
    return build


def _build_synthetic(config, data_cfg, device, rank, world_size, s):
    shape = tuple(int(v) for v in (config.get("synthetic_shape") or (3, 32, 32)))
    if len(shape) != 3 or min(shape) <= 0:
        raise ConfigError(f"synthetic_shape must be [C, H, W] with positive sizes, got {list(shape)}")
    num_classes = int(config.get("num_classes") or 10)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2 for the synthetic data set, got {num_classes}")
    n_train = int(config.get("synthetic_train_size") or 1024)
    n_val = int(config.get("synthetic_val_size") or 256)
    train = synthetic.make_split(num_classes, shape, n_train, s["seed"], "train")
    val = synthetic.make_split(num_classes, shape, n_val, s["seed"], "val")
    m, sd = synthetic.MEAN_STD
    mean, std = _mean_std(data_cfg, shape[0], (m,) * shape[0], (sd,) * shape[0])
    names = [f"class_{i}" for i in range(num_classes)]
    crop_padding = 4 if shape[1:] == (32, 32) else 0  # CIFAR-style crop only at CIFAR size; flip always
    return _in_memory(train, val, names, mean, std, s, device, rank, world_size, crop_padding, "synthetic")


def _build_imagenet(config, data_cfg, device, rank, world_size, s):
    data_cfg = data_cfg or {}
    train_samples, train_classes = imagenet.load_split(s["data_root"], "train")
    val_samples, val_classes = imagenet.load_split(s["data_root"], "val")
    if train_classes != val_classes:
        raise DataError(f"train/ has {len(train_classes)} class folders and val/ {len(val_classes)} "
                          f"(or their names differ) under {s['data_root']}; both need the same class folders")
    size = _size(s["input_size"] if s["input_size"] is not None else data_cfg.get("input_size", 224),
                 "input_size")
    crop_pct = float(s["crop_pct"] if s["crop_pct"] is not None else data_cfg.get("crop_pct", 0.875))
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    eval_interp = s["eval_interpolation"] or data_cfg.get("interpolation") or "bilinear"
    check_interpolation(eval_interp, False, "eval_interpolation")
    if s["remode"] not in ("pixel", "const", "rand"):
        raise ConfigError(f"remode must be 'pixel', 'const' or 'rand', got {s['remode']!r}")
    if not 0 <= s["reprob"] <= 1:
        raise ConfigError(f"reprob must be in [0, 1], got {s['reprob']}")
    mean, std = _mean_std(data_cfg, 3, IMAGENET_MEAN, IMAGENET_STD)
    train_tf = build_train_transform(size, s["train_interpolation"], s["hflip"], s["auto_augment"], mean)
    eval_tf = build_eval_transform(size, crop_pct, eval_interp)
    erasing = None
    if s["reprob"] > 0:
        from timm.data.random_erasing import RandomErasing
        erasing = RandomErasing(s["reprob"], mode=s["remode"], device=device)
    common = dict(device=device, mean=mean, std=std, rank=rank, world_size=world_size, seed=s["seed"],
                  num_workers=s["num_workers"], pin_memory=s["pin_memory"],
                  channels_last=s["channels_last"], bad_images=s["bad_images"])
    train_samples = train_samples[:subset(len(train_samples), s["train_subset"])]
    val_samples = val_samples[:subset(len(val_samples), s["val_subset"])]
    train_loader = FolderLoader(train_samples, train_classes, train_tf, train=True,
                                batch_size=s["batch_size"], drop_last=s["drop_last"],
                                random_erasing=erasing, **common)
    val_loader = FolderLoader(val_samples, val_classes, eval_tf, train=False,
                              batch_size=s["val_batch_size"], **common)
    names = imagenet.readable_names(train_classes)
    for ld in (train_loader, val_loader):
        ld.readable_class_names = names
        ld.input_size, ld.crop_pct = (3,) + tuple(size), crop_pct
    return train_loader, val_loader


DATASETS = {
    "cifar10": _build_cifar("cifar10"),
    "cifar100": _build_cifar("cifar100"),
    "coco": coco.build_coco,
    "imagenet": _build_imagenet,
    "synthetic": _build_synthetic,
}


def list_datasets():
    """Names accepted by the ``dataset`` config key."""
    return sorted(DATASETS)


def build_loaders(config, data_cfg, device, rank=0, world_size=1):
    """(train_loader, val_loader) for ``config.dataset``, sharded for ``rank`` of ``world_size``."""
    name = config.get("dataset")
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}{closest(name, DATASETS)}; "
                          f"valid datasets are: {', '.join(list_datasets())}")
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
        raise ValueError(f"bad rank {rank} / world_size {world_size}")
    settings = loader_settings(config, world_size)
    train_loader, val_loader = DATASETS[name](config, data_cfg, device, rank, world_size, settings)
    for ld in (train_loader, val_loader):
        ld.dataset_name = name
        if not hasattr(ld, "readable_class_names"):
            ld.readable_class_names = None
    return train_loader, val_loader

