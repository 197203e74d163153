"""Parameter groups with the recipes' weight-decay rules, and the optimizer."""
from typing import Iterable, List, Optional

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer"]


def param_groups(model: nn.Module, weight_decay: float, mode: str = "all", head: Optional[Iterable[str]] = None,
                 head_lr_scale: float = 1.0) -> List[dict]:
    """``mode='all'`` decays every parameter (official CondenseNet); ``'ndim2'`` only weights with >= 2
    dims (official CondenseNetV2 / timm: BN and biases get no decay). Parameters named in ``head`` (the
    classifier, when fine-tuning) form groups of their own whose ``lr_scale`` is ``head_lr_scale``: the
    Trainer sets each group's lr to the schedule's lr times its ``lr_scale``."""
    head = set(head or ())
    buckets = {}    # (is head, decays) -> parameters, in model order
    for name, p in model.named_parameters():
        decays = not (mode == "ndim2" and p.ndim < 2)
        buckets.setdefault((name in head, decays), []).append(p)
    groups = []
    for is_head in (False, True):
        for decays in (True, False):
            params = buckets.get((is_head, decays))
            if params or (not is_head and decays):
                groups.append({"params": params or [], "weight_decay": weight_decay if decays else 0.0,
                               "lr_scale": head_lr_scale if is_head else 1.0})
    return groups


def build_optimizer(groups: List[dict], lr: float, momentum: float = 0.9, nesterov: bool = True
                    ) -> torch.optim.Optimizer:
    """SGD (Nesterov when ``nesterov`` and momentum > 0), as both official recipes train."""
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
