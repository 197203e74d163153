"""What a model variant is, in one record: timm's ``pretrained_cfg`` (name and meaning).

Every registered variant carries one :class:`PretrainedCfg` (``model.pretrained_cfg``): its eval
transform (input size, mean/std, crop_pct, interpolation), class count, classifier and first-conv
module names, the published FLOPs/params/top-1 with their source, and the released weights
(:class:`WeightEntry`, by tag). Transforms, the FLOPs table, the paper-tables tool, the tests and the
README read these facts from here, so each is written once.

This module is the ground floor: it imports nothing from agents/, datasets/ or graphs/.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

__all__ = ["IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "Published", "WeightEntry", "PretrainedCfg"]

# The ImageNet statistics every ImageNet model here was trained with (torchvision / timm defaults).
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Published:
    """Figures printed by the paper or the official README, as printed (strings keep their rounding)."""

    flops: Optional[str] = None        # e.g. "46M" (FLOPs as the family counts them; ReXNet: MACs)
    params: Optional[str] = None       # e.g. "2.0M"
    top1: Optional[float] = None       # top-1 accuracy in % on ``dataset``
    top5: Optional[float] = None
    dataset: str = "imagenet"          # the data set the figures are for
    source: str = ""                   # where they are printed


@dataclass(frozen=True)
class WeightEntry:
    """One released weight file."""

    url: str
    file_name: str
    layout: str = "official"           # 'official' | 'timm' | 'paddle'
    converted: bool = False            # CondenseNets: converted (deployable) or training-time weights
    num_classes: int = 1000
    hash: Optional[str] = None         # sha256 prefix, only where one is published (torch.hub checks it)
    license: str = ""
    note: str = ""                     # e.g. how to fetch the file by hand when the host needs a browser


@dataclass(frozen=True)
class PretrainedCfg:
    """The facts of one model variant (see the module docstring)."""

    input_size: tuple = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    mean: Optional[tuple] = IMAGENET_DEFAULT_MEAN   # None: the data set's own constants (CIFAR)
    std: Optional[tuple] = IMAGENET_DEFAULT_STD
    num_classes: int = 1000
    classifier: str = "classifier"     # module name of the final classifier
    first_conv: str = "features.init_conv"
    paper: str = ""                    # "Title (Authors, venue)", arXiv link
    published: Optional[Published] = None
    weights: dict = field(default_factory=dict)      # tag -> WeightEntry

    def replace(self, **changes) -> "PretrainedCfg":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain types (for checkpoints, JSON and logs)."""
        return dataclasses.asdict(self)
