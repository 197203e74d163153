"""Activations of CondenseNetV2: ReLU and hard swish, chosen per block by name."""
import torch.nn as nn

from utils.errors import check

ACTIVATIONS = ("ReLU", "HS")


class HS(nn.Hardswish):
    """Hard swish ``x * relu6(x + 3) / 6`` (MobileNetV3), the official CondenseNetV2 ``HS``.

    The official module computes it with a ``relu6`` child in three passes; this is the single fused
    kernel of ``nn.Hardswish`` (same function, no parameters, so state dicts are unchanged)."""


def make_activation(kind: str = "ReLU") -> nn.Module:
    """``'ReLU'`` -> nn.ReLU(inplace=True), ``'HS'`` -> :class:`HS`."""
    check(kind in ACTIVATIONS, f"unknown activation {kind!r}; use one of {', '.join(ACTIVATIONS)}")
    return nn.ReLU(inplace=True) if kind == "ReLU" else HS()
