"""Mixup (Zhang et al., 2018) / CutMix (Yun et al., 2019) with timm's ``Mixup``, reproducible per batch.

timm's ``Mixup`` is used as is (its lam draws, ``switch_prob`` choice, CutMix box with lam
correction, and ``mixup_target``: smoothed one-hot targets mixed with the batch's mirror), because the
recipes' keys (``--mixup``, ``--cutmix``, ``--mixup-prob``, ``--mixup-switch-prob``, ``--mixup-mode``,
``--mixup-off-epoch``, ``--smoothing``) mean exactly what it does. It draws from numpy's global RNG, so
every call runs inside ``seeded_global_rngs(mix_seed(seed, epoch, batch, rank, TAG_MIX))``: the draws
are a pure function of the batch position (an epoch resumed at batch k mixes exactly as the
uninterrupted run) and nobody else's random stream moves. No host sync: lam and the box are host
numbers; the mixing is device arithmetic.
"""
from typing import Tuple

import torch

from datasets.transforms import TAG_MIX, mix_seed, seeded_global_rngs
from utils.errors import ConfigError
MIXUP_MODES = ("batch", "pair", "elem")


class SeededMixup:
    """``__call__(x, y, epoch, batch, rank=0) -> (mixed x, soft targets (B, num_classes))``.

    Args are timm's: ``mixup``/``cutmix`` alphas (> 0 enables), ``prob`` (``mixup_prob``: chance a batch
    is mixed at all), ``switch_prob`` (chance of CutMix when both are on), ``mode`` ('batch' | 'pair' |
    'elem'), ``label_smoothing``, ``num_classes``; ``off_epoch`` (``mixup_off_epoch``): from this 0-based
    epoch on, no mixing (targets stay smoothed one-hot), 0 = never off. An odd batch mixes its first
    ``B - 1`` samples (timm pairs sample i with B-1-i) and gives the last one its unmixed target.
    """

    def __init__(self, mixup: float, cutmix: float, prob: float = 1.0, switch_prob: float = 0.5,
                 mode: str = "batch", label_smoothing: float = 0.1, num_classes: int = 1000,
                 off_epoch: int = 0, seed: int = 0):
        from timm.data import Mixup
        if not (mixup > 0 or cutmix > 0):
            raise ConfigError("mixup or cutmix must be > 0 to mix batches")
        if mode not in MIXUP_MODES:
            raise ConfigError(f"mixup_mode must be one of {', '.join(MIXUP_MODES)}, got {mode!r}")
        self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode=mode,
                           label_smoothing=label_smoothing, num_classes=num_classes)
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.off_epoch, self.seed = off_epoch, seed

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int,
                 rank: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        from timm.data.mixup import mixup_target
        self.mixup.mixup_enabled = not (self.off_epoch and epoch >= self.off_epoch)
        n = x.shape[0] - x.shape[0] % 2
        with seeded_global_rngs(mix_seed(self.seed, epoch, batch, rank, TAG_MIX)):
            if n == x.shape[0]:
                return self.mixup(x, y)
            _, head = self.mixup(x[:n], y[:n]) if n else (None, y.new_zeros((0, self.num_classes)))
        tail = mixup_target(y[n:], self.num_classes, 1.0, self.label_smoothing)
        return x, torch.cat([head, tail.to(head.dtype)])
