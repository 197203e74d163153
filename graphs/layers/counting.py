"""FLOPs/params of the masked layers under the papers' counting rules (registered with graphs.flops).

The official ``measure_model`` functions charge a training-time learned group convolution and SFR
their *final condensed* cost, whatever the current stage: one op per element of the activation over
the input, plus the dense conv's multiply-accumulates divided by the condense factor; parameters are
the BN's two vectors plus the conv weight divided by the condense factor (CondenseNet ``utils.py``,
CondenseNetV2 ``utils/tools.py``).
"""
from typing import Sequence

import torch

from graphs.flops import register_counter

from .lgc import LearnedGroupConv
from .sfr import SFR


def _per_sample(x) -> int:
    """Elements per sample of a tensor or of a list of tensors (the dense layers pass lists)."""
    if isinstance(x, (list, tuple)):
        return sum(_per_sample(t) for t in x)
    return x.numel() // max(1, x.shape[0])


def _spatial(x) -> Sequence[int]:
    return (x[0] if isinstance(x, (list, tuple)) else x).shape[-2:]


@register_counter(LearnedGroupConv, rules=("v1", "v2"))
def _count_lgc(m: LearnedGroupConv, inputs: tuple, output: torch.Tensor):
    h, w = output.shape[-2:]
    ops = _per_sample(inputs[0]) + m.in_channels * m.out_channels * h * w / m.condense_factor
    return ops, 2 * m.in_channels + m.conv.weight.numel() / m.condense_factor


@register_counter(SFR, rules=("v1", "v2"))
def _count_sfr(m: SFR, inputs: tuple, output: torch.Tensor):
    h, w = _spatial(inputs[0])
    ops = _per_sample(inputs[0]) + m.in_channels * m.out_channels * h * w / m.condense_factor
    return ops, 2 * m.in_channels + m.conv.weight.numel() / m.condense_factor
