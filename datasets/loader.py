"""Loaders: sharding/resume plan, the in-memory loader (CIFAR, synthetic) and the folder loader.

Both loaders are iterables of ``(images, labels)`` already on the device: images float32 normalised
(NCHW, or channels_last), labels int64. Shared interface: ``len(loader)`` (batches of one FULL epoch on
this rank, also after ``set_epoch(e, start_batch=k)``, when iterating yields batches k..len-1),
``set_epoch(epoch, start_batch=0)`` (persistent, like DistributedSampler.set_epoch), ``batch_size`` (per
process), ``num_samples`` (samples this rank sees in a full epoch), ``dataset_size``, ``num_classes``,
``class_names``, ``skipped_images``, and what a sample looks like to the model: ``input_size`` (C, H, W),
``mean``/``std`` (the normalisation).

Sharding. Train: the permutation of torch DistributedSampler (``randperm`` seeded by seed + epoch), padded
by repeating its head to a multiple of world_size, then ``rank::world_size``; batches of the per-process
size, the last one dropped when ``drop_last``. Val: unshuffled, no padding, ``rank::world_size`` (every
sample counted exactly once over the ranks; shards and last batches may be uneven).
"""
import math

import torch

from datasets.decode import DEFAULT_MAX_PIXELS, bad_image, decode_image
from datasets.transforms import (TAG_CROP, TAG_ERASE, TAG_SAMPLE, DeviceNormalize, draw_crop_flip,
                                 mix_seed, random_crop_flip, seeded_global_rngs)
from utils.errors import DataError
from utils.shutdown import worker_init


def shard_indices(n, rank, world_size, *, shuffle, seed=0, epoch=0, pad=True):
    """This rank's sample indices for one epoch (an int64 tensor), DistributedSampler-style."""
    if shuffle:
        g = torch.Generator()
        g.manual_seed(int(seed) + int(epoch))
        idx = torch.randperm(n, generator=g)
    else:
        idx = torch.arange(n)
    if pad and n > 0:
        extra = math.ceil(n / world_size) * world_size - n
        if extra:
            idx = torch.cat([idx, idx.repeat(math.ceil(extra / n))[:extra]])
    return idx[rank::world_size]


class BatchPlan:
    """Which indices form batch b of epoch e on this rank; knows the resume point (start_batch)."""

    def __init__(self, n, batch_size, rank, world_size, *, train, seed, drop_last):
        self.n, self.batch_size, self.rank, self.world_size = n, batch_size, rank, world_size
        self.train, self.seed = train, int(seed)
        self.drop_last = bool(drop_last) and train
        self.epoch, self.start_batch = 0, 0
        self.shard_size = len(shard_indices(n, rank, world_size, shuffle=False, pad=train))

    def set_epoch(self, epoch, start_batch=0):
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def __len__(self):
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    @property
    def num_samples(self):
        return len(self) * self.batch_size if self.drop_last else self.shard_size

    def batches(self):
        """Yield (batch_index, index tensor) for batches start_batch..len-1 of the current epoch."""
        idx = shard_indices(self.n, self.rank, self.world_size, shuffle=self.train, seed=self.seed,
                            epoch=self.epoch, pad=self.train)
        bs = self.batch_size
        for b in range(self.start_batch, len(self)):
            yield b, idx[b * bs:(b + 1) * bs]


def handle_bad_images(loader, bad) -> None:
    """Unreadable images of a batch (the decoder's sentences): stop (``bad_images: error``), or skip and count."""
    for message in bad:
        bad_image(message, loader.bad_images)
    loader.skipped_images += len(bad)


class _LoaderBase:
    """Common attributes and the epoch/resume state."""

    def __init__(self, plan, *, device, mean, std, channels_last, class_names, dataset_size, train):
        self.plan = plan
        self.device = torch.device(device)
        self.train = train
        self.normalize = DeviceNormalize(mean, std, self.device, channels_last)
        self.mean, self.std = self.normalize.mean, self.normalize.std
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.dataset_size = dataset_size
        self.skipped_images = 0

    batch_size = property(lambda self: self.plan.batch_size)
    num_samples = property(lambda self: self.plan.num_samples)
    epoch = property(lambda self: self.plan.epoch)
    start_batch = property(lambda self: self.plan.start_batch)

    def set_epoch(self, epoch, start_batch=0):
        """Select the epoch (data order and augmentation) and the first batch the next iteration yields."""
        self.plan.set_epoch(epoch, start_batch)

    def __len__(self):
        return len(self.plan)

    def _seed(self, tag, batch):
        return mix_seed(self.plan.seed, self.plan.epoch, batch, self.plan.rank, tag)


class InMemoryLoader(_LoaderBase):
    """Batches of an in-memory uint8 (N, C, H, W) tensor, augmented and normalised on the device.

    Per batch: gather on the host (into pinned memory when ``pin_memory`` and the device is CUDA), copy
    to the device non_blocking, then (train) vectorised random crop with ``crop_padding`` zero padding
    plus horizontal flip with probability ``hflip``, then normalise. The crop/flip draws come from a
    generator seeded by (seed, epoch, batch, rank): resuming at batch k gives exactly the same batches.
    """

    def __init__(self, images, labels, class_names, *, batch_size, train, device, mean, std,
                 rank=0, world_size=1, seed=0, drop_last=False, crop_padding=0, hflip=0.0,
                 pin_memory=False, channels_last=False):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        plan = BatchPlan(len(images), batch_size, rank, world_size, train=train, seed=seed,
                         drop_last=drop_last)
        super().__init__(plan, device=device, mean=mean, std=std, channels_last=channels_last,
                         class_names=class_names, dataset_size=len(images), train=train)
        self.images = images.contiguous()
        self.labels = labels.to(torch.int64).contiguous()
        self.input_size = tuple(images.shape[1:])
        self.crop_padding = int(crop_padding) if train else 0
        self.hflip = float(hflip) if train else 0.0
        self.pin = bool(pin_memory) and self.device.type == "cuda" and torch.cuda.is_available()

    def _gather(self, tensor, idx):
        if not self.pin:
            return tensor.index_select(0, idx).to(self.device, non_blocking=True)
        # Fresh pinned buffers come from the caching host allocator, which keeps a block alive until
        # its asynchronous copy has finished, so this is safe without explicit events.
        out = torch.empty((len(idx),) + tuple(tensor.shape[1:]), dtype=tensor.dtype, pin_memory=True)
        torch.index_select(tensor, 0, idx, out=out)
        return out.to(self.device, non_blocking=True)

    def augment(self, x, batch):
        """Train augmentation of the uint8 batch ``x`` (on the device) for batch index ``batch``."""
        if self.crop_padding <= 0 and self.hflip <= 0:
            return x
        g = torch.Generator()
        g.manual_seed(self._seed(TAG_CROP, batch))
        offsets, flip_idx = draw_crop_flip(len(x), self.crop_padding, self.hflip, g)
        return random_crop_flip(x, self._to_device(offsets), self._to_device(flip_idx), self.crop_padding)

    def _to_device(self, tensor):
        """A host tensor on the device without waiting for the GPU: through pinned memory, asynchronously
        (a pageable copy would synchronise the host with the device every batch)."""
        if self.device.type == "cpu":
            return tensor
        if torch.cuda.is_available():
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    def __iter__(self):
        for b, idx in self.plan.batches():
            x = self._gather(self.images, idx)
            y = self._gather(self.labels, idx)
            if self.train:
                x = self.augment(x, b)
            yield self.normalize(x), y


# ------------------------------------------------------------------ folder loader (ImageNet style)
class BadImage:
    """What a worker returns instead of a sample when the file cannot be decoded: the decoder's sentence."""

    __slots__ = ("message",)

    def __init__(self, message):
        self.message = message


class FolderDataset(torch.utils.data.Dataset):
    """(path, class) samples -> (uint8 CHW tensor, class) or BadImage; items are (index, sample_seed).

    Images are read by ``datasets.decode.decode_image`` with ``max_pixels`` (an attribute, so the worker
    processes get it with the data set). With a sample seed, the transform's draws (timm/torchvision use
    the global Python, numpy and torch generators) are seeded from it, so a sample's augmentation depends
    only on (seed, epoch, rank, position in the epoch), not on worker scheduling.
    """

    def __init__(self, samples, transform, max_pixels=DEFAULT_MAX_PIXELS):
        self.samples, self.transform, self.max_pixels = samples, transform, max_pixels

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, item):
        index, sample_seed = item
        path, target = self.samples[index]
        try:
            img = decode_image(path, self.max_pixels)
        except DataError as e:  # what to do about it is decided in the main process (bad_images)
            return BadImage(str(e))
        if sample_seed is None:
            return self.transform(img), target
        with seeded_global_rngs(sample_seed):
            return self.transform(img), target


def collate_uint8(batch):
    """Stack uint8 images (in shared memory inside workers); BadImage entries are passed up separately."""
    good = [s for s in batch if not isinstance(s, BadImage)]
    bad = [s.message for s in batch if isinstance(s, BadImage)]
    if not good:
        return None, None, bad
    images = torch.utils.data.default_collate([s[0] for s in good])
    labels = torch.tensor([s[1] for s in good], dtype=torch.int64)
    return images, labels, bad


class _PlanBatchSampler:
    """batch_sampler for torch DataLoader: the plan's batches as lists of (index, sample_seed)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader.plan) - self.loader.plan.start_batch

    def __iter__(self):
        ld = self.loader
        for b, idx in ld.plan.batches():
            if ld.train:
                base = ld._seed(TAG_SAMPLE, b)
                yield [(int(i), mix_seed(base, j)) for j, i in enumerate(idx.tolist())]
            else:
                yield [(int(i), None) for i in idx.tolist()]


class FolderLoader(_LoaderBase):
    """torch DataLoader over decoded-in-workers uint8 tensors; normalisation and random erasing on device.

    The ORDER of samples is a pure function of (seed, epoch, rank) like the in-memory loader. Per-sample
    augmentation is seeded per (seed, epoch, rank, batch, position) and random erasing per batch, so a
    resumed epoch also reproduces the augmentation, as long as the same library versions are used (the
    brief only promises the order; do not rely on bit-exact pixels across torchvision/timm upgrades).
    Images larger than ``max_pixels`` or unreadable: ``bad_images='skip'`` drops them (``skipped_images``
    counts them, a warning is logged, that batch is smaller); ``'error'`` raises DataError naming the file.
    """

    def __init__(self, samples, class_names, transform, *, batch_size, train, device, mean, std,
                 rank=0, world_size=1, seed=0, drop_last=False, num_workers=0, pin_memory=False,
                 channels_last=False, random_erasing=None, bad_images="error", max_pixels=DEFAULT_MAX_PIXELS):
        plan = BatchPlan(len(samples), batch_size, rank, world_size, train=train, seed=seed,
                         drop_last=drop_last)
        super().__init__(plan, device=device, mean=mean, std=std, channels_last=channels_last,
                         class_names=class_names, dataset_size=len(samples), train=train)
        self.dataset = FolderDataset(samples, transform, max_pixels)
        self.random_erasing = random_erasing if train else None
        self.bad_images = bad_images
        self.generator = torch.Generator()
        self.generator.manual_seed(mix_seed(seed, 0, rank))
        pin = bool(pin_memory) and self.device.type == "cuda" and torch.cuda.is_available()
        self.dataloader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_PlanBatchSampler(self), num_workers=num_workers,
            collate_fn=collate_uint8, pin_memory=pin, persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None, generator=self.generator,
            worker_init_fn=worker_init)

    def set_epoch(self, epoch, start_batch=0):
        super().set_epoch(epoch, start_batch)
        self.generator.manual_seed(mix_seed(self.plan.seed, epoch, self.plan.rank))

    def _handle_bad(self, bad):
        handle_bad_images(self, bad)

    def __iter__(self):
        b = self.plan.start_batch
        for images, labels, bad in self.dataloader:
            if bad:
                self._handle_bad(bad)
            if images is not None:
                x = self.normalize(images.to(self.device, non_blocking=True))
                y = labels.to(self.device, non_blocking=True)
                if self.random_erasing is not None:
                    with seeded_global_rngs(self._seed(TAG_ERASE, b), self.device):
                        x = self.random_erasing(x)
                yield x, y
            b += 1


# ------------------------------------------------------------------ config -> settings
# the resolved config keys (utils.config.resolve) every data set builder reads
LOADER_KEYS = ("seed", "drop_last", "num_workers", "pin_memory", "channels_last", "data_root", "download",
               "train_subset", "val_subset", "hflip", "input_size", "crop_pct", "eval_interpolation",
               "train_interpolation", "auto_augment", "reprob", "remode", "bad_images", "max_image_pixels")


def loader_settings(config, world_size):
    """The data keys of the resolved ``config`` every builder needs, with the global batch split per process."""
    from utils.errors import ConfigError

    batch = config.batch_size
    val_batch = config.val_batch_size or batch
    for key, value in (("batch_size", batch), ("val_batch_size", val_batch)):
        if value % world_size:
            raise ConfigError(f"{key} {value} is the global batch and must be a positive multiple of "
                              f"the {world_size} processes; change it to a multiple of {world_size}")
    return dict(batch_size=batch // world_size, val_batch_size=val_batch // world_size,
                **{key: config[key] for key in LOADER_KEYS})


def subset(n, limit):
    """How many of the first samples to use: all of them, or the first ``limit``."""
    return n if limit is None else max(0, min(n, int(limit)))
