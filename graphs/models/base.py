"""What every classifier of this project offers the layers above it: a typed protocol and its defaults.

The agent, the commands and the detection adapters talk to a model only through
:class:`ClassifierModel`. A model *declares* what it supports in ``capabilities`` (instead of being
probed with ``hasattr``); the defaults of :class:`ModelBase` make every method safe to call:

=====================  =====================================================================
capability             meaning
=====================  =====================================================================
``condense``           ``set_progress(p)`` prunes learned group convolutions (CondenseNet/V2);
                       ``sync_condensation_state()`` re-reads the stage after masks were copied in
``convert``            ``convert()`` returns the deployable group-convolution model
``fuse``               ``fuse()`` returns an inference-only form with BN folded
``memory_efficient``   ``set_memory_efficient(True)`` recomputes BN/activation in backward
``reuse_maps``         ``reuse_matrices()`` gives the papers' feature-reuse heatmaps
=====================  =====================================================================
"""
from typing import FrozenSet, List, Protocol, runtime_checkable

import torch
from torch import nn

from utils.errors import ConfigError

from .pretrained import PretrainedCfg

__all__ = ["ClassifierModel", "ModelBase", "CAPABILITIES"]

CAPABILITIES = ("condense", "convert", "fuse", "memory_efficient", "reuse_maps")


@runtime_checkable
class ClassifierModel(Protocol):
    """The interface the agent, the commands and the detection backbones rely on."""

    pretrained_cfg: PretrainedCfg
    feature_info: List[dict]          # dict(num_chs, reduction, module) per natural stride
    num_classes: int
    num_features: int                 # channels of forward_features' output
    flops_rule: str                   # 'v1' | 'v2' | 'macs' (graphs.flops)
    is_converted: bool

    @property
    def capabilities(self) -> FrozenSet[str]: ...

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def set_progress(self, progress: float) -> int: ...

    def sync_condensation_state(self) -> None: ...

    def set_memory_efficient(self, enabled: bool = True) -> nn.Module: ...

    def convert(self, prune_classifier: bool = True) -> nn.Module: ...

    def fuse(self) -> nn.Module: ...


class ModelBase(nn.Module):
    """Defaults of :class:`ClassifierModel` for a model that supports nothing beyond classifying."""

    flops_rule = "macs"
    is_converted = False
    is_fused = False
    pretrained_cfg: PretrainedCfg = PretrainedCfg()
    # plain Python metadata: TorchScript must not try to compile it
    __jit_ignored_attributes__ = ["pretrained_cfg"]
    __jit_unused_properties__ = ["capabilities"]

    @property
    def capabilities(self) -> FrozenSet[str]:
        return frozenset()

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def set_progress(self, progress: float) -> int:
        """Apply the training-progress schedule; returns the number of structural changes (none here)."""
        return 0

    def sync_condensation_state(self) -> None:
        """Refresh host-side condensation state from the buffers (nothing to refresh here)."""

    def set_memory_efficient(self, enabled: bool = True) -> nn.Module:
        """Switch memory-efficient training on layers that have it (none here); returns ``self``."""
        return self

    def convert(self, prune_classifier: bool = True) -> nn.Module:
        raise ConfigError(f"{type(self).__name__} has no converted (deployable) form; convert applies to the "
                          f"CondenseNets")

    def fuse(self) -> nn.Module:
        raise ConfigError(f"{type(self).__name__} has no fused inference form")
