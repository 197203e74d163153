"""Transforms: device-side normalisation, vectorised CIFAR crop/flip, ImageNet PIL pipelines.

Randomness is never taken from global state for the in-memory sets: every batch draws from its own
``torch.Generator`` seeded by :func:`mix_seed` of (seed, epoch, batch index, rank), so an epoch
resumed at batch k reproduces the uninterrupted run exactly.
"""
import contextlib
import math
import random

import numpy as np
import torch
import torch.nn.functional as F

from datasets.imagenet import MEAN as IMAGENET_MEAN
from utils.errors import ConfigError

_M64 = (1 << 64) - 1
# Stream tags, so that different uses of the same (seed, epoch, batch) never share random numbers.
TAG_CROP, TAG_ERASE, TAG_SAMPLE, TAG_MIX = 1, 2, 3, 4


def _splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def mix_seed(*values):
    """A 63-bit seed that is a pure function of the given integers (same in every process)."""
    h = 0x243F6A8885A308D3
    for v in values:
        h = _splitmix64(h ^ (int(v) & _M64))
    return h >> 1


class DeviceNormalize:
    """uint8 NCHW batch (on its device) -> float32 ``(x/255 - mean) / std``, optionally channels_last."""

    def __init__(self, mean, std, device, channels_last=False):
        mean = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
        self.mean, self.std = tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
        self.scale = (1.0 / (255.0 * std)).float().to(device)
        self.shift = (-mean / std).float().to(device)
        self.channels_last = channels_last

    def __call__(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(torch.float32).mul_(self.scale).add_(self.shift)


def draw_crop_flip(batch_size, padding, hflip, generator):
    """Per-sample window offsets (B, 2) in [0, 2*padding] and the indices of the samples to flip."""
    offsets = torch.randint(0, 2 * padding + 1, (batch_size, 2), generator=generator)
    flip = torch.rand(batch_size, generator=generator) < hflip
    return offsets, flip.nonzero().squeeze(1)


def random_crop_flip(x, offsets, flip_idx, padding):
    """Vectorised RandomCrop(size, padding, fill 0) + horizontal flip of a whole uint8 batch.

    ``x`` (B, C, H, W); ``offsets[i] = (dy, dx)``: sample i is the window starting at row dy, column dx
    of the zero-padded image; ``flip_idx``: samples mirrored left-right after cropping. All on x's device.
    """
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W), a view
        out = windows[torch.arange(b, device=x.device), :, offsets[:, 0], offsets[:, 1]]
    else:
        out = x.clone()
    if flip_idx.numel():
        out[flip_idx] = out[flip_idx].flip(3)
    return out


# ------------------------------------------------------------------ ImageNet (PIL, in workers)
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def check_interpolation(name, allow_random, key):
    valid = _INTERPOLATIONS + (("random",) if allow_random else ())
    if name not in valid:
        raise ConfigError(f"{key} must be one of {', '.join(valid)}, got {name!r}")
    return name


def build_train_transform(size, interpolation="bilinear", hflip=0.5, auto_augment=None,
                          mean=IMAGENET_MEAN, scale=(0.08, 1.0)):
    """PIL image -> uint8 CHW tensor: RandomResizedCrop, flip, optional timm AutoAugment/RandAugment."""
    from timm.data.auto_augment import (augment_and_mix_transform, auto_augment_transform,
                                        rand_augment_transform)
    from timm.data.transforms import RandomResizedCropAndInterpolation, str_to_pil_interp
    from torchvision import transforms as T

    check_interpolation(interpolation, True, "train_interpolation")
    ops = [RandomResizedCropAndInterpolation(size, scale=scale, interpolation=interpolation)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if auto_augment:
        hparams = dict(translate_const=int(min(size) * 0.45),
                       img_mean=tuple(min(255, round(255 * m)) for m in mean))
        if interpolation != "random":
            hparams["interpolation"] = str_to_pil_interp(interpolation)
        try:
            if auto_augment.startswith("rand"):
                ops.append(rand_augment_transform(auto_augment, hparams))
            elif auto_augment.startswith("augmix"):
                hparams["translate_pct"] = 0.3
                ops.append(augment_and_mix_transform(auto_augment, hparams))
            else:
                ops.append(auto_augment_transform(auto_augment, hparams))
        except Exception as e:  # timm raises AssertionError/KeyError/ValueError on a bad string
            raise ConfigError(f"auto_augment {auto_augment!r} is not a valid timm augmentation "
                              f"string ({type(e).__name__}: {e}); use e.g. 'rand-m9-mstd0.5' or null") from None
    ops.append(T.PILToTensor())
    return T.Compose(ops)


def build_eval_transform(size, crop_pct=0.875, interpolation="bilinear"):
    """PIL image -> uint8 CHW tensor: Resize(size / crop_pct) then CenterCrop(size) (timm's rule)."""
    from torchvision import transforms as T

    check_interpolation(interpolation, False, "eval_interpolation")
    mode = T.InterpolationMode(interpolation)
    h, w = size
    if h == w:
        resize = T.Resize(int(math.floor(h / crop_pct)), interpolation=mode)
    else:
        resize = T.Resize(tuple(int(math.floor(s / crop_pct)) for s in size), interpolation=mode)
    return T.Compose([resize, T.CenterCrop(size), T.PILToTensor()])


@contextlib.contextmanager
def seeded_global_rngs(seed, device=None):
    """Seed Python's, numpy's and torch's (CPU and ``device``) global RNGs; restore them on exit.

    timm's RandAugment / RandomErasing and torchvision's flip draw from the global generators, so this
    makes them a pure function of ``seed`` without disturbing anyone else's random stream.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = device is not None and torch.device(device).type == "cuda"
    devices = [torch.device(device)] if cuda else []
    try:
        with torch.random.fork_rng(devices=devices):
            random.seed(seed)
            np.random.seed(seed % (1 << 32))
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                with torch.cuda.device(torch.device(device)):
                    torch.cuda.manual_seed(seed)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def eval_transform(model_cfg, mean, std, input_size=None, crop_pct=None, interpolation=None):
    """PIL image -> normalised float32 CHW tensor: the validation pipeline as one per-image transform.

    Resize(floor(size / crop_pct), interpolation) -> CenterCrop(size) (:func:`build_eval_transform`, as
    validation) -> [0, 1] float -> Normalize(mean, std) (what the loaders do on the device). Arguments
    left None come from ``model_cfg`` (a model's ``pretrained_cfg``, or any record with its fields);
    ``mean``/``std`` are the data set's constants, used where the model's cfg has none (CIFAR models).
    """
    from torchvision import transforms as T

    size = input_size if input_size is not None else model_cfg.input_size
    size = (size, size) if isinstance(size, int) else tuple(size[-2:])
    crop_pct = float(crop_pct if crop_pct is not None else model_cfg.crop_pct)
    if not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be in (0, 1], got {crop_pct}")
    mean = tuple(model_cfg.mean if model_cfg.mean is not None else mean)
    std = tuple(model_cfg.std if model_cfg.std is not None else std)
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise ConfigError(f"mean {mean} and std {std} must have the same length and std must be positive")
    base = build_eval_transform(size, crop_pct=crop_pct, interpolation=interpolation or model_cfg.interpolation)
    return T.Compose(list(base.transforms) + [T.ConvertImageDtype(torch.float32), T.Normalize(mean, std)])
