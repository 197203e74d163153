"""A learnable synthetic image set, deterministic from the seed (for smoke tests and benchmarks).

Each class has a fixed smooth random prototype (a 4x4 random colour grid upsampled to the image size);
a sample is its class prototype plus Gaussian pixel noise (std 32/255), rounded and clipped to uint8.
A small model separates the classes quickly, so a short run beats chance. Train and val share the
prototypes but draw independent noise and labels.
"""
import torch
import torch.nn.functional as F

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
