"""Parameter groups with the recipes' weight-decay rules, and the optimizer."""
from typing import List

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: nn.Module, weight_decay: float, mode: str = "all") -> List[dict]:
    """``mode='all'`` decays every parameter (official CondenseNet); ``'ndim2'`` only weights with >= 2
    dims (official CondenseNetV2 / timm: BN and biases get no decay)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if mode == "ndim2" and p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(groups: List[dict], lr: float, momentum: float = 0.9, nesterov: bool = True
                    ) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``nesterov`` and momentum > 0), as both official recipes train."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
