"""COCO detection data (``dataset: coco``): annotations, aspect-ratio grouped batches, loaders.

Layout (the standard one): ``data_root/annotations/instances_{train,val}2017.json`` and the images
in ``data_root/{train,val}2017/``. COCO category ids are not contiguous (1..90 with holes): they are
sorted and mapped to labels 1..K (``cat_to_label``), label 0 being background; ``label_to_cat``
maps predictions back for the evaluator.

As torchvision's ``references/detection`` (``coco_utils.py``): crowd boxes (``iscrowd=1``) are left
out of the training targets (they stay in the evaluation ground truth, where pycocotools ignores
detections on them), boxes are converted to x1y1x2y2 and clipped to the image, and training drops
images without a usable box. A box with non-positive width or height is an error, or is skipped and
counted with ``bad_images: skip``. Images are read by ``datasets.decode`` (EXIF orientation, 16-bit,
transparency, ``max_image_pixels``); a photo whose annotation gives its stored, unrotated size keeps
that orientation, since its boxes were drawn on the stored pixels (:func:`read_image`).

Batches: the rank's epoch order is torch DistributedSampler's (``datasets.loader.shard_indices``),
then grouped by aspect ratio as torchvision's ``GroupedBatchSampler`` does (a batch is emitted when
its group has ``batch_size`` images); what is left at the end is batched in group order. Every rank
gets ``ceil(shard / batch)`` batches (``floor`` with ``drop_last``), so DDP ranks step together, and
the batches of an epoch are a pure function of (seed, epoch, rank, world size): ``set_epoch(e,
start_batch=k)`` resumes exactly. The horizontal flip of each sample is drawn from a generator seeded
by (seed, epoch, batch, rank, position). Resizing (and multi-scale ``min_size``) is the detector's
``GeneralizedRCNNTransform``; the loader yields images at their own size: a list of float images in
[0, 1] (C, H, W) on the device and a list of target dicts (``boxes``, ``labels``, ``image_id``).
"""
import bisect
import json
import logging
import os
from typing import Optional

import torch

from datasets.decode import DEFAULT_MAX_PIXELS, decode_image
from datasets.loader import _PlanBatchSampler, handle_bad_images, BadImage, BatchPlan, shard_indices, subset
from datasets.transforms import mix_seed
from utils.errors import DataError
from utils.shutdown import worker_init

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
TAG_FLIP = 11


def annotation_path(root: str, split: str) -> str:
    return os.path.join(root, "annotations", f"instances_{split}2017.json")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise DataError(f"COCO annotation file {path} does not exist; data_root must hold "
                        f"annotations/instances_{{train,val}}2017.json and {{train,val}}2017/")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e}); re-download the COCO annotations") from e
    missing = [k for k in ("images", "annotations", "categories")
               if not (isinstance(data, dict) and isinstance(data.get(k), list))]
    if missing:
        raise DataError(f"{path} is not a COCO instances file: it has no {missing[0]!r} list "
                        f"(a COCO file holds 'images', 'annotations' and 'categories')")
    return data


def _fields(entries, keys, what, path):
    for e in entries:
        if not isinstance(e, dict) or any(k not in e for k in keys):
            raise DataError(f"{path} is not a COCO instances file: an entry of {what!r} lacks one of "
                            f"{', '.join(keys)} ({str(e)[:80]})")


class CocoIndex:
    """The samples of one split: image paths, sizes, x1y1x2y2 boxes and contiguous labels.

    ``train``: leave out crowd boxes and images without a usable box (``dropped``: reason -> images).
    ``bad_images``: 'error' raises DataError on a box with non-positive width/height, 'skip' drops it
    (``skipped_boxes``). ``coco_gt``: the annotation dict for evaluation (bad boxes removed; crowd boxes
    kept); ``annotated``: the ids of the images with a non-crowd box in it, the ones COCO AP scores.
    """

    def __init__(self, root: str, split: str, *, train: bool, bad_images: str = "error"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        path = annotation_path(root, split)
        data = _read_json(path)
        _fields(data["images"], ("id", "file_name", "width", "height"), "images", path)
        _fields(data["annotations"], ("image_id", "bbox", "category_id"), "annotations", path)
        _fields(data["categories"], ("id", "name"), "categories", path)
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c["name"]) for c in cats]
        self.cat_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat = [0] + self.cat_ids        # label 0 = background (no category)
        images = {int(im["id"]): im for im in data["images"]}
        per_image = {i: [] for i in images}
        listed, crowd = dict.fromkeys(images, 0), dict.fromkeys(images, 0)     # annotations per image
        kept, self.skipped_boxes, self.crowd_boxes = [], 0, 0
        for ann in data["annotations"]:
            cid, iid = ann["category_id"], ann["image_id"]
            if cid not in self.cat_to_label:
                raise DataError(f"{path}: annotation {ann.get('id', '?')} has category_id {cid}, which is not "
                                f"in 'categories' (ids {self.cat_ids[:10]}); fix the file")
            if iid not in images:
                raise DataError(f"{path}: annotation {ann.get('id', '?')} refers to image_id {iid}, which is "
                                f"not in 'images'; fix the file")
            listed[iid] += 1
            crowd[iid] += bool(ann.get("iscrowd", 0))
            box = ann["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and box[2] > 0 and box[3] > 0):
                if bad_images != "skip":
                    raise DataError(f"{path}: annotation {ann.get('id', '?')} of image {iid} has the box "
                                    f"{box} with non-positive width or height; fix it or set bad_images "
                                    f"to 'skip'")
                self.skipped_boxes += 1
                continue
            if "area" not in ann:       # COCOeval's size ranges read it; tools that write boxes only leave it out
                ann = dict(ann, area=float(box[2] * box[3]))
            kept.append(ann)
            if ann.get("iscrowd", 0):
                self.crowd_boxes += 1
                if train:
                    continue
            per_image[iid].append(ann)
        if self.skipped_boxes:
            log.warning("%s: skipped %d box(es) with non-positive width or height", path, self.skipped_boxes)
        self.coco_gt = dict(data, annotations=kept)
        self.annotated = {ann["image_id"] for ann in kept if not ann.get("iscrowd", 0)}
        self.dropped = {}
        self.folder = os.path.join(root, f"{split}2017")
        self.samples = []     # (path, image_id, width, height, boxes (N, 4) float32, labels (N,) int64)
        for iid in sorted(images):
            im = images[iid]
            w, h = float(im["width"]), float(im["height"])
            boxes, labels = [], []
            for ann in per_image[iid]:
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                x1, y1, x2, y2 = max(0.0, x), max(0.0, y), min(w, x + bw), min(h, y + bh)
                if x2 > x1 and y2 > y1:   # as torchvision's ConvertCocoPolysToMask: drop what clipping empties
                    boxes.append((x1, y1, x2, y2))
                    labels.append(self.cat_to_label[ann["category_id"]])
            if train and not boxes:
                reason = ("without annotations" if not listed[iid] else "with crowd boxes only"
                          if listed[iid] == crowd[iid] else "whose boxes are empty, invalid or outside the image")
                self.dropped[reason] = self.dropped.get(reason, 0) + 1
                continue
            self.samples.append((os.path.join(self.folder, im["file_name"]), iid, w, h,
                                 torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                                 torch.tensor(labels, dtype=torch.int64)))
        if not self.samples:
            raise DataError(f"{path} lists no {'image with a usable box' if train else 'image'}; "
                            f"check the annotation file")

    def check_files(self, limit: Optional[int] = None) -> None:
        """DataError naming the first listed image that is missing on disk (of the first ``limit``)."""
        samples = self.samples[:subset(len(self.samples), limit)]
        missing = [s[0] for s in samples if not os.path.isfile(s[0])]
        if missing:
            raise DataError(f"image {missing[0]} is listed in the annotations but missing on disk "
                            f"({len(missing)} missing in all); restore the {os.path.basename(self.folder)}/ "
                            f"folder or fix the annotation file")

    @property
    def aspect_ratios(self) -> list:
        return [s[2] / s[3] for s in self.samples]


def aspect_ratio_groups(ratios, k: int = 3) -> list:
    """torchvision's ``create_aspect_ratio_groups``: bins at 2**linspace(-1, 1, 2k+1) of width/height."""
    bins = [2 ** (-1 + 2 * i / (2 * k)) for i in range(2 * k + 1)]
    return [bisect.bisect_right(bins, r) for r in ratios]


class GroupedBatchPlan(BatchPlan):
    """BatchPlan whose training batches hold images of one aspect-ratio group (see module doc)."""

    def __init__(self, groups, batch_size, rank, world_size, *, train, seed, drop_last):
        super().__init__(len(groups), batch_size, rank, world_size, train=train, seed=seed, drop_last=drop_last)
        self.groups = list(groups)

    def epoch_batches(self) -> list:
        """Every batch (a list of sample indices) of the current epoch on this rank."""
        idx = shard_indices(self.n, self.rank, self.world_size, shuffle=self.train, seed=self.seed,
                            epoch=self.epoch, pad=self.train).tolist()
        bs = self.batch_size
        if not self.train:
            return [idx[i:i + bs] for i in range(0, len(idx), bs)]
        batches, buffers = [], {}
        for i in idx:
            buf = buffers.setdefault(self.groups[i], [])
            buf.append(i)
            if len(buf) == bs:
                batches.append(buf)
                buffers[self.groups[i]] = []
        rest = [i for g in sorted(buffers) for i in buffers[g]]
        batches += [rest[j:j + bs] for j in range(0, len(rest), bs)]
        return batches[:len(self)]

    def batches(self):
        batches = self.epoch_batches()
        for b in range(self.start_batch, len(self)):
            yield b, batches[b]


def read_image(path: str, width: float, height: float, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
    """The RGB PIL image the annotation's boxes refer to: upright (EXIF orientation applied, as
    ``datasets.decode``), unless the annotation's width x height is the stored, unrotated size (a tool that
    ignored the tag): then the stored pixels. DataError (one sentence) if unreadable."""
    img = decode_image(path, max_pixels)
    size = (int(width), int(height))
    if img.size == size[::-1] != size:
        stored = decode_image(path, max_pixels, exif_orientation=False)
        if stored.size == size:
            return stored
    return img


class _CocoSamples(torch.utils.data.Dataset):
    """Items ``(index, flip)`` -> (uint8 CHW image, target) or BadImage; decoded in the workers."""

    def __init__(self, index: CocoIndex, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        self.samples, self.max_pixels = index.samples, max_pixels

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        from torchvision.transforms.functional import pil_to_tensor

        i, flip = item
        path, iid, w, h, boxes, labels = self.samples[i]
        try:
            img = pil_to_tensor(read_image(path, w, h, self.max_pixels))
        except DataError as e:  # what to do about it is decided in the main process (bad_images)
            return BadImage(str(e))
        boxes = boxes.clone()
        if img.shape[-2:] != (int(h), int(w)):
            # the annotation's size is what the boxes refer to; rescale them to the decoded image
            sx, sy = img.shape[-1] / w, img.shape[-2] / h
            boxes *= torch.tensor([sx, sy, sx, sy])
        if flip:
            img = img.flip(-1)
            boxes = torch.stack([img.shape[-1] - boxes[:, 2], boxes[:, 1], img.shape[-1] - boxes[:, 0],
                                 boxes[:, 3]], 1)
        return img, dict(boxes=boxes, labels=labels.clone(), image_id=torch.tensor(iid))


def collate_detection(batch):
    """Images of their own sizes stay a list (no stacking); BadImage entries are passed up separately."""
    good = [s for s in batch if not isinstance(s, BadImage)]
    bad = [s.message for s in batch if isinstance(s, BadImage)]
    return [s[0] for s in good], [s[1] for s in good], bad


class _Sampler(_PlanBatchSampler):
    """The plan's batches with the per-sample flip draws (seeded by the batch position)."""

    def __iter__(self):
        ld = self.loader
        for b, idx in ld.plan.batches():
            if ld.hflip > 0:
                g = torch.Generator()
                g.manual_seed(ld._seed(b))
                flips = (torch.rand(len(idx), generator=g) < ld.hflip).tolist()
            else:
                flips = [False] * len(idx)
            yield list(zip(idx, flips))


class CocoLoader:
    """Detection batches ``(images, targets)`` on ``device``; the loader interface of datasets.loader.

    Attributes besides the shared ones (``len``, ``set_epoch``, ``batch_size``, ``num_samples``,
    ``dataset_size``, ``num_classes``, ``class_names``, ``skipped_images``): ``coco_gt`` (annotation
    dict for ``engine.coco_eval``), ``image_ids`` (the images this loader covers, all ranks),
    ``label_to_cat``, ``cat_to_label``, ``skipped_boxes``.
    """

    def __init__(self, index: CocoIndex, *, batch_size: int, train: bool, device, rank: int = 0,
                 world_size: int = 1, seed: int = 0, drop_last: bool = False, hflip: float = 0.5,
                 num_workers: int = 0, pin_memory: bool = False, bad_images: str = "error",
                 limit: Optional[int] = None, group_factor: int = 3,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        index.samples = index.samples[:subset(len(index.samples), limit)]
        index.check_files()
        self.index, self.train, self.device = index, train, torch.device(device)
        # group_factor 0 turns the aspect-ratio grouping off (torchvision's --aspect-ratio-group-factor -1)
        grouped = train and group_factor > 0
        groups = aspect_ratio_groups(index.aspect_ratios, group_factor) if grouped else [0] * len(index.samples)
        self.plan = GroupedBatchPlan(groups, batch_size, rank, world_size, train=train, seed=seed,
                                     drop_last=drop_last)
        self.hflip = float(hflip) if train else 0.0
        self.bad_images = bad_images
        self.skipped_images = 0
        self.class_names = list(index.class_names)
        self.num_classes = len(self.class_names)
        self.dataset_size = len(index.samples)
        self.coco_gt = index.coco_gt
        self.image_ids = [s[1] for s in index.samples]
        self.label_to_cat, self.cat_to_label = index.label_to_cat, index.cat_to_label
        self.skipped_boxes = index.skipped_boxes
        pin = bool(pin_memory) and self.device.type == "cuda" and torch.cuda.is_available()
        self.dataloader = torch.utils.data.DataLoader(
            _CocoSamples(index, max_pixels), batch_sampler=_Sampler(self), num_workers=num_workers,
            collate_fn=collate_detection, pin_memory=pin, persistent_workers=num_workers > 0,
            worker_init_fn=worker_init)

    batch_size = property(lambda self: self.plan.batch_size)
    num_samples = property(lambda self: self.plan.num_samples)
    epoch = property(lambda self: self.plan.epoch)
    start_batch = property(lambda self: self.plan.start_batch)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (order, grouping, flips) and the first batch the next iteration yields."""
        self.plan.set_epoch(epoch, start_batch)

    def __len__(self):
        return len(self.plan)

    def _seed(self, batch):
        return mix_seed(self.plan.seed, self.plan.epoch, batch, self.plan.rank, TAG_FLIP)

    def _handle_bad(self, bad):
        handle_bad_images(self, bad)

    def __iter__(self):
        for images, targets, bad in self.dataloader:
            if bad:
                self._handle_bad(bad)
            if not images:
                continue
            images = [im.to(self.device, non_blocking=True).float().div_(255) for im in images]
            targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
            yield images, targets


def build_coco(config, data_cfg, device, rank, world_size, s):
    """(train, val) CocoLoaders from the ``datasets.loader_settings`` dict ``s`` (``dataset: coco``)."""
    root = s["data_root"]
    train_index = CocoIndex(root, "train", train=True, bad_images=s["bad_images"])
    val_index = CocoIndex(root, "val", train=False, bad_images=s["bad_images"])
    if train_index.cat_ids != val_index.cat_ids:
        raise DataError(f"the train and val annotation files of {root} list different categories; "
                        f"both need the same 'categories'")
    if train_index.dropped and rank == 0:
        n = sum(train_index.dropped.values())
        log.warning("%s: %d of %d training images have no usable box and are left out (%s)",
                    annotation_path(root, "train"), n, n + len(train_index.samples),
                    ", ".join(f"{k} {reason}" for reason, k in sorted(train_index.dropped.items())))
    common = dict(device=device, rank=rank, world_size=world_size, seed=s["seed"], num_workers=s["num_workers"],
                  pin_memory=s["pin_memory"], bad_images=s["bad_images"], max_pixels=s["max_image_pixels"])
    train = CocoLoader(train_index, batch_size=s["batch_size"], train=True, drop_last=s["drop_last"],
                       hflip=s["hflip"], limit=s["train_subset"],
                       group_factor=config.aspect_ratio_group_factor, **common)
    val = CocoLoader(val_index, batch_size=s["val_batch_size"], train=False, limit=s["val_subset"], **common)
    if not val_index.annotated.intersection(val.image_ids):     # pycocotools would report AP -1 after training
        subset_note = " (the first val_subset images)" if s["val_subset"] else ""
        raise DataError(f"none of the {len(val.image_ids)} validation images{subset_note} of "
                        f"{annotation_path(root, 'val')} has a non-crowd box, so COCO AP cannot be computed; "
                        f"give validation images with box annotations")
    return train, val

