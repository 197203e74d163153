"""Synthetic data sets, deterministic from the seed: a learnable image-classification set (in memory, for
smoke tests and benchmarks) and a small COCO-format detection set (written to disk, for the tests and the
short detection run of docs/detection.md).

Classification: each class has a fixed smooth random prototype (a 4x4 random colour grid upsampled to the
image size); a sample is its class prototype plus Gaussian pixel noise (std 32/255), rounded and clipped
to uint8. A small model separates the classes quickly, so a short run beats chance. Train and val share
the prototypes but draw independent noise and labels.

Detection (:func:`make_coco_set`): backgrounds are random crops (128..256 px a side, varied aspect ratios)
of the JPEG photos in a ``.tar.gz`` archive (read straight from it, only as many images as needed);
without one, a smooth random texture. Each image gets 1..3 objects that do not overlap much, one category
per colour and shape, with NON-contiguous COCO ids:

    3 'red_box' (filled red rectangle), 7 'green_ellipse' (filled green ellipse),
    11 'blue_box' (filled blue rectangle)

The first two training images also get a crowd box (``iscrowd=1``, drawn as grey hatching).
Written as ``DEST/annotations/instances_{train,val}2017.json`` and ``DEST/{train,val}2017/*.jpg``.
"""
import json
import random
import tarfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from datasets.transforms import mix_seed

MEAN_STD = (0.5, 0.25)
_NOISE = 32.0


def _prototypes(num_classes, shape, seed):
    c, h, w = shape
    g = torch.Generator()
    g.manual_seed(mix_seed(seed, 0x5E))
    grid = torch.rand(num_classes, c, 4, 4, generator=g) * 255.0
    return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)


def make_split(num_classes, shape, size, seed, split, chunk=1024):
    """(uint8 images (size, C, H, W), int64 labels) for split 'train' or 'val'."""
    protos = _prototypes(num_classes, shape, seed)
    g = torch.Generator()
    g.manual_seed(mix_seed(seed, 0x5E, 1 if split == "train" else 2))
    labels = torch.randint(0, num_classes, (size,), generator=g)
    images = torch.empty((size,) + tuple(shape), dtype=torch.uint8)
    for s in range(0, size, chunk):  # chunks keep the float temporaries small for big shapes
        lab = labels[s:s + chunk]
        noise = torch.randn((len(lab),) + tuple(shape), generator=g) * _NOISE
        images[s:s + chunk] = (protos[lab] + noise).round_().clamp_(0, 255).to(torch.uint8)
    return images, labels


# ------------------------------------------------------------------------------------ detection (COCO format)
COCO_CATEGORIES = [dict(id=3, name="red_box"), dict(id=7, name="green_ellipse"), dict(id=11, name="blue_box")]
_COCO_COLOURS = {3: (230, 20, 20), 7: (20, 210, 40), 11: (30, 40, 230)}


def _backgrounds(n, rng, archive):
    """``n`` RGB PIL images of 128..256 px a side."""
    sources = []
    if archive is not None and Path(archive).is_file():
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".JPEG"):
                    sources.append(Image.open(tar.extractfile(member)).convert("RGB"))
                    sources[-1].load()
                    if len(sources) == n:
                        break
    out = []
    for i in range(n):
        w, h = rng.randint(128, 256), rng.randint(128, 256)
        if i < len(sources):
            src = sources[i]
            src = src.resize((max(w, src.width), max(h, src.height)))
            x, y = rng.randint(0, src.width - w), rng.randint(0, src.height - h)
            out.append(src.crop((x, y, x + w, y + h)))
        else:
            noise = np.random.default_rng(rng.randint(0, 2 ** 31)).integers(0, 255, (h // 8 + 1, w // 8 + 1, 3))
            img = Image.fromarray(noise.astype(np.uint8)).resize((w, h), Image.BILINEAR)
            out.append(img.filter(ImageFilter.GaussianBlur(2)))
    return out


def _iou(a, b):
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _draw_split(images, rng, first_id, first_ann, crowd):
    entries, anns = [], []
    for k, img in enumerate(images):
        iid = first_id + k
        draw = ImageDraw.Draw(img)
        boxes = []
        for _ in range(rng.randint(1, 3)):
            for _try in range(20):
                bw = rng.randint(24, max(25, img.width // 2))
                bh = rng.randint(24, max(25, img.height // 2))
                box = [rng.randint(0, img.width - bw), rng.randint(0, img.height - bh), bw, bh]
                if all(_iou(box, b) < 0.1 for b in boxes):
                    break
            else:
                continue
            boxes.append(box)
            cid = rng.choice([c["id"] for c in COCO_CATEGORIES])
            x, y, bw, bh = box
            shape = draw.ellipse if cid == 7 else draw.rectangle
            shape([x, y, x + bw - 1, y + bh - 1], fill=_COCO_COLOURS[cid])
            anns.append(dict(id=first_ann + len(anns), image_id=iid, category_id=cid, bbox=[x, y, bw, bh],
                             area=bw * bh, iscrowd=0))
        if crowd and k < 2:
            x, y = rng.randint(0, img.width // 2), rng.randint(0, img.height // 2)
            for j in range(0, 40, 6):
                draw.line([x + j, y, x + j, y + 40], fill=(128, 128, 128), width=2)
            anns.append(dict(id=first_ann + len(anns), image_id=iid, category_id=COCO_CATEGORIES[0]["id"],
                             bbox=[x, y, 40, 40], area=1600, iscrowd=1))
        entries.append(dict(id=iid, file_name=f"{iid:012d}.jpg", width=img.width, height=img.height))
    return entries, anns


def make_coco_set(dest: Union[str, Path], n_train: int = 16, n_val: int = 8, seed: int = 0,
                  archive: Optional[Union[str, Path]] = None) -> Path:
    """Write the detection set under ``dest`` (backgrounds from the photo ``archive``, see the module
    docstring); returns ``dest`` as a Path."""
    dest = Path(dest)
    rng = random.Random(seed)
    backgrounds = _backgrounds(n_train + n_val, rng, archive)
    first_ann = 1
    for split, imgs, first_id, crowd in (("train", backgrounds[:n_train], 101, True),
                                         ("val", backgrounds[n_train:], 5001, False)):
        entries, anns = _draw_split(imgs, rng, first_id, first_ann, crowd)
        first_ann += len(anns)
        folder = dest / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        for entry, img in zip(entries, imgs):
            img.save(folder / entry["file_name"], quality=95)
        (dest / "annotations").mkdir(parents=True, exist_ok=True)
        data = dict(info=dict(description="generated test set"), images=entries, annotations=anns,
                    categories=[dict(c, supercategory="shape") for c in COCO_CATEGORIES])
        with open(dest / "annotations" / f"instances_{split}2017.json", "w", encoding="utf-8") as f:
            json.dump(data, f)
    return dest
