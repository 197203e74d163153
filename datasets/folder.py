"""Your own images: ``<data_root>/train/<class>/<image>`` and ``<data_root>/val/<class>/<image>``.

The ``folder`` data set. Class names are the class folder names, sorted (class index = position), as
in torchvision's ``ImageFolder``; images may sit in sub-folders of a class folder. Any file type Pillow
can decode counts as an image (``datasets.decode.image_extensions``: .jpg, .png, .webp, .tif, .bmp, .gif,
...); other files (.txt, .DS_Store, hidden files) are ignored. train/ and val/ must hold the same classes.
The scan judges a file readable with the loaders' own decoder (``datasets.decode.decode_image``).

``stratified_subset`` picks a class-balanced subset with a fixed seed: the samples of every class
are shuffled and the classes are taken in turn, so ``train_subset=N`` draws from every class instead of
the first classes of the sorted sample list. The ``imagenet`` tree uses it too.
"""
from __future__ import annotations

import os
import random
from typing import Optional

from datasets.decode import DEFAULT_MAX_PIXELS, decode_image, image_extensions
from utils.errors import DataError

__all__ = ["class_names", "scan_split", "load_folder", "stratified_subset"]

SUBSET_SEED = 0     # the same subset for every run, rank and training seed


def _first_error(files: list, max_pixels: Optional[int]) -> Optional[str]:
    """None as soon as one of ``files`` decodes, else why the first one does not."""
    first = None
    for path in files:
        try:
            decode_image(path, max_pixels)
            return None
        except DataError as e:
            first = first or str(e)
    return first


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


def scan_split(root, split: str, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> tuple:
    """(samples [(path, class index)], class names) of ``root/split``; DataError (one sentence) if unusable.

    Every class folder must hold at least one image the loaders can decode with ``max_pixels`` (only the
    first files are decoded, until one succeeds, so a large tree is not read twice).
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
        if not files:
            raise DataError(f"class folder {os.path.join(folder, name)} holds no readable image (no file with "
                            f"an image extension: {', '.join(exts[:4])}, ...); add images or remove the folder")
        error = _first_error(files, max_pixels)
        if error:
            raise DataError(f"class folder {os.path.join(folder, name)} holds no readable image: none of its "
                            f"{len(files)} file(s) decodes; the first: {error}")
        samples.extend((p, index) for p in files)
    return samples, classes


def load_folder(root, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> tuple:
    """(train samples, val samples, class names) of a folder data set with the same classes in both splits."""
    train, train_classes = scan_split(root, "train", max_pixels)
    val, val_classes = scan_split(root, "val", max_pixels)
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
