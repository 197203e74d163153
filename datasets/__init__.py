"""Data sets and loaders.

    train_loader, val_loader = build_loaders(config, model.pretrained_cfg, device, rank=0, world_size=1)

``config`` is a resolved config (``utils.config.resolve``); the model's ``pretrained_cfg`` (any record with
``input_size``, ``crop_pct``, ``interpolation``, ``mean`` and ``std``) gives the eval geometry and the
normalisation (mean, std; None = the data set's constants); without one, ImageNet-style data are evaluated
with timm's defaults (:data:`DEFAULT_EVAL`). The loaders yield ``(images, labels)`` on ``device`` and are
described in :mod:`datasets.loader`.
"""
from types import SimpleNamespace

from datasets import cifar, coco, folder, imagenet, synthetic
from datasets.loader import FolderLoader, InMemoryLoader, loader_settings, subset
from datasets.transforms import build_eval_transform, build_train_transform, check_interpolation, eval_transform
from utils.errors import CheckpointError, ConfigError, DataError, closest

__all__ = ["build_loaders", "check_data", "list_datasets", "class_names_for", "resolve_class_names", "dataset_mean_std", "calibration_loader",
           "eval_transform", "DATASETS", "InMemoryLoader", "FolderLoader"]

# The eval geometry of ImageNet-style data when no model gives one: timm's defaults (224 px, crop 0.875, bicubic).
DEFAULT_EVAL = SimpleNamespace(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic")


def _mean_std(model_cfg, channels, default_mean, default_std):
    mean, std = (model_cfg.mean, model_cfg.std) if model_cfg is not None else (None, None)
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
    def build(config, model_cfg, device, rank, world_size, s):
        tx, ty, vx, vy, names = cifar.load_cifar(name, s["data_root"], s["download"])
        mean, std = _mean_std(model_cfg, 3, cifar.MEAN[name], cifar.STD[name])
        return _in_memory((tx, ty), (vx, vy), names, mean, std, s, device, rank, world_size, 4, name)
    build.__name__ = f"build_{name}"
    return build


def _build_synthetic(config, model_cfg, device, rank, world_size, s):
    shape, num_classes = tuple(config.synthetic_shape), config.num_classes
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2 for the synthetic data set, got {num_classes}")
    train = synthetic.make_split(num_classes, shape, config.synthetic_train_size, s["seed"], "train")
    val = synthetic.make_split(num_classes, shape, config.synthetic_val_size, s["seed"], "val")
    m, sd = synthetic.MEAN_STD
    mean, std = _mean_std(model_cfg, shape[0], (m,) * shape[0], (sd,) * shape[0])
    names = [f"class_{i}" for i in range(num_classes)]
    crop_padding = 4 if shape[1:] == (32, 32) else 0  # CIFAR-style crop only at CIFAR size; flip always
    return _in_memory(train, val, names, mean, std, s, device, rank, world_size, crop_padding, "synthetic")


def _build_imagenet(config, model_cfg, device, rank, world_size, s):
    train_samples, train_classes = imagenet.load_split(s["data_root"], "train")
    val_samples, val_classes = imagenet.load_split(s["data_root"], "val")
    if train_classes != val_classes:
        raise DataError(f"train/ has {len(train_classes)} class folders and val/ {len(val_classes)} "
                          f"(or their names differ) under {s['data_root']}; both need the same class folders")
    mean, std = _mean_std(model_cfg, 3, imagenet.MEAN, imagenet.STD)
    loaders = _folder_loaders(train_samples, val_samples, train_classes, mean, std, model_cfg, device, rank,
                              world_size, s)
    for ld in loaders:
        ld.readable_class_names = imagenet.readable_names(train_classes)
    return loaders


def _build_folder(config, model_cfg, device, rank, world_size, s):
    """Your own ``train/<class>/*`` and ``val/<class>/*`` images (:mod:`datasets.folder`), normalised with
    the model's (``pretrained_cfg``) mean/std, else ImageNet's."""
    train_samples, val_samples, classes = folder.load_folder(s["data_root"], s["max_image_pixels"])
    mean, std = _mean_std(model_cfg, 3, imagenet.MEAN, imagenet.STD)
    loaders = _folder_loaders(train_samples, val_samples, classes, mean, std, model_cfg, device, rank,
                              world_size, s)
    for ld in loaders:
        ld.readable_class_names = list(classes)
    return loaders


def _folder_loaders(train_samples, val_samples, classes, mean, std, model_cfg, device, rank, world_size, s):
    """Train and val FolderLoaders with the ImageNet-style transforms and class-balanced subsets."""
    model_cfg = model_cfg if model_cfg is not None else DEFAULT_EVAL
    size = _size(s["input_size"] if s["input_size"] is not None else model_cfg.input_size,
                 "input_size")
    crop_pct = float(s["crop_pct"] if s["crop_pct"] is not None else model_cfg.crop_pct)
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    eval_interp = s["eval_interpolation"] or model_cfg.interpolation
    check_interpolation(eval_interp, False, "eval_interpolation")
    train_tf = build_train_transform(size, s["train_interpolation"], s["hflip"], s["auto_augment"], mean)
    eval_tf = build_eval_transform(size, crop_pct, eval_interp)
    erasing = None
    if s["reprob"] > 0:
        from timm.data.random_erasing import RandomErasing
        erasing = RandomErasing(s["reprob"], mode=s["remode"], device=device)
    common = dict(device=device, mean=mean, std=std, rank=rank, world_size=world_size, seed=s["seed"],
                  num_workers=s["num_workers"], pin_memory=s["pin_memory"],
                  channels_last=s["channels_last"], bad_images=s["bad_images"], max_pixels=s["max_image_pixels"])
    train_samples = folder.stratified_subset(train_samples, s["train_subset"])
    val_samples = folder.stratified_subset(val_samples, s["val_subset"])
    train_loader = FolderLoader(train_samples, classes, train_tf, train=True,
                                batch_size=s["batch_size"], drop_last=s["drop_last"],
                                random_erasing=erasing, **common)
    val_loader = FolderLoader(val_samples, classes, eval_tf, train=False,
                              batch_size=s["val_batch_size"], **common)
    for ld in (train_loader, val_loader):
        ld.input_size, ld.crop_pct = (3,) + tuple(size), crop_pct
    return train_loader, val_loader


DATASETS = {
    "cifar10": _build_cifar("cifar10"),
    "cifar100": _build_cifar("cifar100"),
    "coco": coco.build_coco,
    "imagenet": _build_imagenet,
    "folder": _build_folder,
    "synthetic": _build_synthetic,
}


def resolve_class_names(num_classes, checkpoint=None, dataset=None, data_root=None):
    """Names of the ``num_classes`` outputs: the checkpoint's ``class_names`` first, then the data set's.

    ``checkpoint``: a loaded checkpoint dict (its ``class_names`` list, written by training) or None.
    A checkpoint whose list does not have ``num_classes`` names raises CheckpointError (one sentence).
    Without names in the checkpoint: :func:`class_names_for`.
    """
    n = int(num_classes)
    names = checkpoint.get("class_names") if isinstance(checkpoint, dict) else None
    if names is not None:
        names = [str(x) for x in names]
        if len(names) != n:
            raise CheckpointError(f"the checkpoint stores {len(names)} class names but the model has {n} "
                                  f"outputs; the checkpoint is inconsistent — retrain or pass num_classes={len(names)}")
        return names
    return class_names_for(dataset, n, data_root)


def class_names_for(dataset, num_classes, data_root=None):
    """Readable names of the ``num_classes`` outputs of a model trained on ``dataset`` without reading the
    data set itself (predict): CIFAR's label names, ImageNet-1k's category names (torchvision's
    metadata), the ``folder`` data set's class folder names (``<data_root>/train/*``, when their count
    matches), else ``class_0``, ``class_1``, ..."""
    n = int(num_classes)
    if dataset == "folder" and data_root:
        names = folder.class_names(data_root)
        if names is not None and len(names) == n:
            return names
    if dataset in ("cifar10", "cifar100") and n == cifar.FILES[dataset]["classes"]:
        return cifar.class_names(dataset, data_root)
    if dataset == "imagenet" and n == 1000:
        names = imagenet.imagenet1k_names()
        if names:
            return names
    return [f"class_{i}" for i in range(n)]


def calibration_loader(train_loader, val_loader, count):
    """The first ``count`` training images through the EVAL transform (no augmentation), batched like
    validation: what int8 post-training quantization calibrates on (folder images decoded as in training)."""
    common = dict(batch_size=val_loader.batch_size, train=False, device=train_loader.device,
                  mean=train_loader.mean, std=train_loader.std)
    if isinstance(train_loader, InMemoryLoader):
        return InMemoryLoader(train_loader.images[:count], train_loader.labels[:count], train_loader.class_names,
                              **common)
    return FolderLoader(train_loader.dataset.samples[:count], train_loader.class_names,
                        val_loader.dataset.transform, bad_images=train_loader.bad_images,
                        max_pixels=train_loader.dataset.max_pixels, **common)


def dataset_mean_std(dataset):
    """The normalisation constants of ``dataset`` (used where the model's cfg has none)."""
    if dataset in cifar.MEAN:
        return cifar.MEAN[dataset], cifar.STD[dataset]
    if dataset == "synthetic":
        m, sd = synthetic.MEAN_STD
        return (m,) * 3, (sd,) * 3
    return imagenet.MEAN, imagenet.STD


def check_data(config) -> None:
    """Refuse synthetic data without classes or shape, and a normalisation that is not one number per channel."""
    if config.dataset == "synthetic" and config.num_classes is None:
        raise ConfigError("dataset 'synthetic' needs num_classes (e.g. \"num_classes\": 10)")
    if len(config.synthetic_shape) != 3 or min(config.synthetic_shape) < 1:
        raise ConfigError(f"synthetic_shape must be three positive sizes [C, H, W], got {config.synthetic_shape}")
    for key in ("mean", "std"):
        values = config[key]
        if values is not None and (len(values) != 3 or (key == "std" and min(values) <= 0)):
            raise ConfigError(f"{key} must be three {'positive ' if key == 'std' else ''}numbers (one per RGB "
                              f"channel), got {values}")


def list_datasets():
    """Names accepted by the ``dataset`` config key."""
    return sorted(DATASETS)


def build_loaders(config, model_cfg, device, rank=0, world_size=1):
    """(train_loader, val_loader) for ``config.dataset``, sharded for ``rank`` of ``world_size``."""
    name = config.dataset
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}{closest(name, DATASETS)}; "
                          f"valid datasets are: {', '.join(list_datasets())}")
    if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
        raise ValueError(f"bad rank {rank} / world_size {world_size}")
    settings = loader_settings(config, world_size)
    train_loader, val_loader = DATASETS[name](config, model_cfg, device, rank, world_size, settings)
    for ld in (train_loader, val_loader):
        ld.dataset_name = name
        if not hasattr(ld, "readable_class_names"):
            ld.readable_class_names = None
    return train_loader, val_loader

