"""Fine-tuning controls on a model: which parameters are the head, and freezing the backbone.

The head is the classifier that :func:`graphs.models.hub.load_pretrained` re-initialises
(``model.classifier_keys()``, else ``pretrained_cfg.classifier``). ``freeze_backbone_epochs`` trains only
the head: :func:`set_backbone_frozen` turns ``requires_grad`` off for every other parameter, so the
backward pass stops at the head and the optimizer skips the backbone (torch's SGD/AdamW leave a
parameter whose ``grad`` is None untouched: no momentum, no weight decay), and holds the backbone's
BatchNorm layers in eval mode so their running statistics stay as loaded (timm's ``freeze`` does the
same with FrozenBatchNorm2d). Call it again after every ``model.train()``, which resets BN modes.
"""
from __future__ import annotations

import torch.nn as nn

from .hub import classifier_keys

__all__ = ["head_parameter_names", "set_backbone_frozen"]


def head_parameter_names(model: nn.Module, pretrained_cfg=None) -> set:
    """Names (as in ``model.named_parameters()``) of the head's parameters."""
    keys = set(classifier_keys(model, pretrained_cfg))
    return {name for name, _ in model.named_parameters() if name in keys}


def _head_module_names(model, head):
    return {name.rpartition(".")[0] for name in head}


def set_backbone_frozen(model: nn.Module, frozen: bool, pretrained_cfg=None) -> int:
    """Freeze (or unfreeze) every parameter outside the head; returns how many parameters are frozen now."""
    head = head_parameter_names(model, pretrained_cfg)
    if not head:
        raise ValueError(f"{type(model).__name__} has no classifier parameters to keep training")
    for name, p in model.named_parameters():
        p.requires_grad_(name in head or not frozen)
    head_modules = _head_module_names(model, head)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and name not in head_modules:
            m.train(model.training and not frozen)
    return sum(1 for name, _ in model.named_parameters() if frozen and name not in head)
