"""Dense layers and blocks of CondenseNet (v1) and CondenseNetV2, with official module names.

v1 layer: ``conv_1`` = LearnedGroupConv(C_in -> bottleneck*k) -> ``conv_2`` = Conv 3x3 (-> k).
The v1 block passes the *list* of earlier feature maps to each layer and concatenates inside the
layer (torchvision DenseNet style); the block output is the concatenation of all of them.

v2 layer: the same two convs (with the block's activation), optional ``se`` on the new features, then
``sfr`` reactivates the old features: output = cat([x + sfr(new), new]).

Stochastic depth in a v2 layer (``drop_path`` > 0, training only): the layer's whole contribution is
dropped per sample -- both the reactivation ``sfr(new)`` added to ``x`` and the new maps ``new`` are
multiplied by the same per-sample 0 / 1/keep mask, so a dropped layer is the identity on the old
features and adds zero maps, the dense-block analogue of Huang et al. (ECCV 2016) skipping a residual
block. The SFR itself still sees the undropped ``new`` (its BN statistics do not depend on the drops).
"""
import torch
import torch.nn as nn

from utils.errors import check

from .conv import Conv
from .lgc import CondensedLGC, LearnedGroupConv
from .se import SELayer
from .sfr import SFR, CondensedSFR


def _check_3x3(width, growth, group_3x3):
    check(width % group_3x3 == 0 and growth % group_3x3 == 0,
          f"the 3x3 group conv {width}->{growth} cannot use group_3x3={group_3x3}; "
          f"choose a growth rate that is a multiple of {group_3x3}")


class _DenseLayer(nn.Module):
    """CondenseNet v1 dense layer; ``forward(features)`` takes a tensor or list and returns the k new maps."""

    def __init__(self, in_channels, growth, bottleneck=4, group_1x1=4, group_3x3=4, condense_factor=None,
                 dropout_rate=0.0, converted=False):
        super().__init__()
        width = bottleneck * growth
        _check_3x3(width, growth, group_3x3)
        if converted:
            self.conv_1 = CondensedLGC(in_channels, width, group_1x1, condense_factor, "ReLU", "relu")
        else:
            self.conv_1 = LearnedGroupConv(in_channels, width, 1, groups=group_1x1,
                                           condense_factor=condense_factor, dropout_rate=dropout_rate,
                                           activation="ReLU", act_name="relu")
        self.conv_2 = Conv(width, growth, 3, padding=1, groups=group_3x3, act_name="relu")

    def forward(self, features):
        return self.conv_2(self.conv_1(features))


class _DenseBlock(nn.Module):
    """v1 block of ``denselayer_1..n``; returns cat([input, new_1, ..., new_n])."""

    def __init__(self, num_layers, in_channels, growth, **layer_kw):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer_{i + 1}", _DenseLayer(in_channels + i * growth, growth, **layer_kw))

    def forward(self, x):
        features = list(x) if isinstance(x, (list, tuple)) else [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class _SFRDenseLayer(nn.Module):
    """CondenseNetV2 dense layer: new = conv_2(conv_1(x)) (-> se); returns cat([x + sfr(new), new])."""

    def __init__(self, in_channels, growth, bottleneck=4, group_1x1=8, group_3x3=8, group_trans=8,
                 condense_factor=None, trans_factor=None, activation="ReLU", use_se=False,
                 dropout_rate=0.0, converted=False, drop_path=0.0):
        super().__init__()
        self.drop_path = float(drop_path)
        width = bottleneck * growth
        _check_3x3(width, growth, group_3x3)
        if converted:
            self.conv_1 = CondensedLGC(in_channels, width, group_1x1, condense_factor, activation, "activation")
        else:
            self.conv_1 = LearnedGroupConv(in_channels, width, 1, groups=group_1x1,
                                           condense_factor=condense_factor, dropout_rate=dropout_rate,
                                           activation=activation, act_name="activation")
        self.conv_2 = Conv(width, growth, 3, padding=1, groups=group_3x3, activation=activation,
                           act_name="activation")
        if converted:
            self.sfr = CondensedSFR(growth, in_channels, group_trans, trans_factor, activation, "activation")
        else:
            self.sfr = SFR(growth, in_channels, groups=group_trans, condense_factor=trans_factor,
                           activation=activation, act_name="activation")
        self.use_se = use_se
        if use_se:
            self.se = SELayer(growth, reduction=1)

    def forward(self, x):
        new = self.conv_2(self.conv_1(x))
        if self.use_se:
            new = self.se(new)
        if self.drop_path > 0 and self.training:
            keep = 1.0 - self.drop_path
            mask = new.new_empty((new.shape[0],) + (1,) * (new.dim() - 1)).bernoulli_(keep).div_(keep)
            return torch.cat([x + self.sfr(new) * mask, new * mask], 1)
        return torch.cat([self.sfr(new, x), new], 1)


class _SFRDenseBlock(nn.Sequential):
    """v2 block of ``denselayer_1..n``; ``drop_paths``: one stochastic-depth rate per layer (or None)."""

    def __init__(self, num_layers, in_channels, growth, drop_paths=None, **layer_kw):
        super().__init__()
        drop_paths = drop_paths or [0.0] * num_layers
        for i in range(num_layers):
            self.add_module(f"denselayer_{i + 1}", _SFRDenseLayer(in_channels + i * growth, growth,
                                                                  drop_path=drop_paths[i], **layer_kw))


class _Transition(nn.Module):
    """2x2 average pool, stride 2 (no conv, no compression)."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.pool(x)


def features_before_pool(features, x):
    """Run a ``features`` Sequential up to (not including) its ``pool_last`` module."""
    for name, module in features.named_children():
        if name == "pool_last":
            break
        x = module(x)
    return x
