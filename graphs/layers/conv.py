"""Pre-activation convolution (BN -> activation -> conv).

CondenseNet (Huang et al., CVPR 2018) and CondenseNetV2 (Yang et al., CVPR 2021) build every plain
convolution as ``Conv`` = Sequential(``norm``, ``relu`` | ``activation``, ``conv``) with no bias; the
child names match the official checkpoints (v1 names the activation ``relu``, v2 ``activation``).
"""
import torch
import torch.nn as nn

from utils.errors import check

from .activation import make_activation
from .efficient import bn_act_conv, can_use


class Conv(nn.Sequential):
    """BatchNorm2d -> activation -> Conv2d (no bias); children ``norm``, ``relu``/``activation``, ``conv``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, groups=1,
                 activation="ReLU", act_name="relu", bn_momentum=0.1):
        check(in_channels % groups == 0 and out_channels % groups == 0,
              f"a {kernel_size}x{kernel_size} conv with {in_channels} inputs and {out_channels} outputs "
              f"cannot be split into {groups} groups; choose widths that are multiples of the group count")
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(in_channels, momentum=bn_momentum))
        self.add_module(act_name, make_activation(activation))
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                                          padding=padding, groups=groups, bias=False))

    memory_efficient = False

    def forward(self, x):
        """BN -> activation -> conv; ``x`` may be a list of maps (concatenated on channels first).

        With ``memory_efficient`` (training, grad enabled) the BN/activation output is recomputed in the
        backward pass instead of stored (:mod:`graphs.layers.efficient`).
        """
        norm, act, conv = self._modules["norm"], self[1], self._modules["conv"]
        if can_use(self, norm, act) and conv.bias is None and conv.padding_mode == "zeros":
            return bn_act_conv(x, norm, act, conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
        if isinstance(x, (list, tuple)):
            x = torch.cat(x, 1)
        return conv(act(norm(x)))
