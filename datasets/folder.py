"""Your own images: ``<data_root>/train/<class>/<image>`` and ``<data_root>/val/<class>/<image>``.

The ``folder`` data set. Class names are the class folder names, sorted (class index = position), as
in torchvision's ``ImageFolder``; images may sit in sub-folders of a class folder. Any file type Pillow
can decode counts as an image (its registered extensions: .jpg, .png, .webp, .tif, .bmp, .gif, ...);
other files (.txt, .DS_Store, hidden files) are ignored. train/ and val/ must hold the same classes.

``stratified_subset`` picks a class-balanced subset with a fixed seed: the samples of every class
are shuffled and the classes are taken in turn, so ``train_subset=N`` draws from every class instead of
the first classes of the sorted sample list. The ``imagenet`` tree uses it too.
"""
from __future__ import annotations

import os
import random
from functools import lru_cache

from utils.errors import DataError

__all__ = ["image_extensions", "class_names", "scan_split", "load_folder", "stratified_subset"]

SUBSET_SEED = 0     # the same subset for every run, rank and training seed
# Pillow formats that identify a file but cannot decode pixels without an extra handler
_STUB_FORMATS = {"BUFR", "GRIB", "HDF5", "WMF", "MPEG"}


@lru_cache(maxsize=1)
def image_extensions() -> tuple:
    """Lower-case extensions of every format this Pillow build can decode."""
    from PIL import Image

    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and fmt not in _STUB_FORMATS))


def _readable(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
        return True
    except Exception:  # noqa: BLE001 - any decoder error means "not a readable image"
        return False


def _class_files(folder: str, exts: tuple) -> list:
    files = []
    for dirpath, dirnames, names in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(os.path.join(dirpath, n) for n in sorted(names)
                     if not n.startswith(".") and n.lower().endswith(exts))
    return files


def _class_folders(folder: str) -> list:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def class_names(root):
    """The class names of the folder data set at ``root`` (sorted ``train/`` sub-folders) or None, without
    reading any image (predict)."""
    train = os.path.join(os.path.expanduser(os.fspath(root)), "train")
    return (_class_folders(train) or None) if os.path.isdir(train) else None


def scan_split(root, split: str) -> tuple:
    """(samples [(path, class index)], class names) of ``root/split``; DataError (one sentence) if unusable.

    Every class folder must hold at least one image Pillow can decode (only the first files are opened,
    until one decodes, so a large tree is not read twice).
    """
    folder = os.path.join(os.path.expanduser(os.fspath(root)), split)
    if not os.path.isdir(folder):
        raise DataError(f"the folder data set needs {folder}/<class>/<image>, but {folder} does not exist; "
                        f"create train/ and val/ with one sub-folder per class or fix data_root")
    classes = _class_folders(folder)
    if not classes:
        raise DataError(f"{folder} has no class folders; put the images in {folder}/<class>/<image>")
    exts = image_extensions()
    samples = []
    for index, name in enumerate(classes):
        files = _class_files(os.path.join(folder, name), exts)
        if not any(_readable(p) for p in files):
            raise DataError(f"class folder {os.path.join(folder, name)} holds no readable image "
                            f"({len(files)} file(s) with an image extension); add images or remove the folder")
        samples.extend((p, index) for p in files)
    return samples, classes


def load_folder(root) -> tuple:
    """(train samples, val samples, class names) of a folder data set with the same classes in both splits."""
    train, train_classes = scan_split(root, "train")
    val, val_classes = scan_split(root, "val")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise DataError(f"train/ and val/ under {root} must hold the same class folders, but "
                        f"{', '.join(only_train[:3]) or 'none'} are only in train/ and "
                        f"{', '.join(only_val[:3]) or 'none'} only in val/")
    return train, val, train_classes


def stratified_subset(samples: list, limit, seed: int = SUBSET_SEED) -> list:
    """``limit`` of the (path, class) ``samples``, balanced over classes (see the module doc); all if None.

    Deterministic for a given ``seed``; the result is sorted like the input (class, then path).
    """
    if limit is None or int(limit) >= len(samples):
        return list(samples)
    limit = max(0, int(limit))
    rng = random.Random(seed)
    by_class = {}
    for i, (_, target) in enumerate(samples):
        by_class.setdefault(target, []).append(i)
    pools = [by_class[c] for c in sorted(by_class)]
    for pool in pools:
        rng.shuffle(pool)
    chosen = []
    depth = 0
    while len(chosen) < limit:
        round_ = [pool[depth] for pool in pools if depth < len(pool)]
        if len(chosen) + len(round_) > limit:
            round_ = rng.sample(round_, limit - len(chosen))   # the last, partial round: random classes
        chosen.extend(round_)
        depth += 1
    return [samples[i] for i in sorted(chosen)]
