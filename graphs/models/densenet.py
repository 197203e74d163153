"""DenseNet-BC, the CondenseNet papers' baseline.

"Densely Connected Convolutional Networks" (Huang et al., CVPR 2017), in the form of the official
CondenseNet repository's ``models/densenet.py``: pre-activation layers (BN-ReLU-conv), bottleneck 1x1
to ``bottleneck * k`` channels, 3x3 to ``k``; transitions BN-ReLU-1x1 conv to half the width (rounded
up to a multiple of ``group_1x1``) then 2x2 average pooling.
"""
import math

import torch
from torch import nn

from graphs.layers.conv import Conv
from graphs.layers.dense import features_before_pool
from graphs.layers.efficient import set_memory_efficient
from graphs.layers.pool import GlobalAvgPool2d
from utils.errors import check

from .base import ModelBase
from .condense import dense_features, init_weights_v1
from .pretrained import Published, cifar_cfg, imagenet_cfg
from .registry import register_variant


def _make_divisible(x, divisor):
    return int(math.ceil(x / divisor) * divisor)


class _DenseLayer(nn.Module):
    def __init__(self, in_channels, growth, bottleneck, group_1x1, group_3x3):
        super().__init__()
        self.conv_1 = Conv(in_channels, bottleneck * growth, 1, groups=group_1x1)
        self.conv_2 = Conv(bottleneck * growth, growth, 3, padding=1, groups=group_3x3)

    def forward(self, x):
        """``x``: a tensor (returns cat([x, new])) or a list of maps (returns only the new maps)."""
        if isinstance(x, (list, tuple)):
            return self.conv_2(self.conv_1(x))
        return torch.cat([x, self.conv_2(self.conv_1(x))], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, num_layers, in_channels, growth, bottleneck, group_1x1, group_3x3):
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer_{i + 1}",
                            _DenseLayer(in_channels + i * growth, growth, bottleneck, group_1x1, group_3x3))

    def forward(self, x):
        # the layers get the list of earlier maps and concatenate inside their first conv, so with
        # memory_efficient only the k-channel maps are kept for backward (no per-layer concatenations)
        features = [x]
        for layer in self.children():
            features.append(layer(features))
        return torch.cat(features, 1)


class _Transition(nn.Module):
    def __init__(self, in_channels, out_channels, group_1x1):
        super().__init__()
        self.conv = Conv(in_channels, out_channels, 1, groups=group_1x1)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.pool(self.conv(x))


class DenseNetBC(ModelBase):
    """DenseNet-BC with per-block ``stages`` and ``growth``; ``data`` picks the CIFAR or ImageNet stem;
    ``drop_rate``: dropout before the classifier (timm's ``--drop``; default 0)."""

    flops_rule = "v1"
    capabilities = frozenset({"memory_efficient"})

    def __init__(self, stages=(16, 16, 16), growth=(12, 12, 12), bottleneck=4, compression=0.5,
                 group_1x1=1, group_3x3=1, data="cifar", num_classes=10, drop_rate=0.0):
        super().__init__()
        check(len(stages) == len(growth) and len(stages) > 0,
              f"stages {list(stages)} and growth {list(growth)} must be non-empty lists of the same length")
        check(all(isinstance(v, int) and v > 0 for v in [*stages, *growth, bottleneck]),
              "stages, growth and bottleneck must be positive integers")
        check(data in ("cifar", "imagenet"), f"data must be 'cifar' or 'imagenet', got {data!r}")
        check(0 < compression <= 1, f"compression must be in (0, 1], got {compression}")
        check(isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1, f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)
        self.pretrained_cfg = cifar_cfg() if data == "cifar" else imagenet_cfg(interpolation="bilinear")

        def transition(width):
            out = _make_divisible(math.ceil(compression * width), group_1x1)
            return _Transition(width, out, group_1x1), out
        # pool_last: the official 8x8 (CIFAR) / 7x7 (ImageNet) average pool, for any input size
        self.features, self.feature_info, self.num_features = dense_features(
            stages, growth, 1 if data == "cifar" else 2,
            lambda i, n, width, k: _DenseBlock(n, width, k, bottleneck, group_1x1, group_3x3), transition,
            GlobalAvgPool2d())
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)
        init_weights_v1(self)

    def classifier_keys(self):
        return ["classifier.weight", "classifier.bias"]

    @torch.no_grad()
    def reset_classifier(self, num_classes):
        """A fresh ``num_classes`` classifier initialised as ``init_weights_v1`` does (Linear weight default, bias 0)."""
        check(isinstance(num_classes, int) and num_classes >= 1,
              f"num_classes must be a positive integer, got {num_classes!r}")
        old = self.classifier
        self.classifier = nn.Linear(old.in_features, num_classes).to(device=old.weight.device,
                                                                      dtype=old.weight.dtype)
        nn.init.zeros_(self.classifier.bias)
        self.num_classes = num_classes
        return self

    def set_memory_efficient(self, enabled=True):
        """Memory-efficient training: every BN-ReLU-conv recomputes its concatenation, BN and ReLU in the
        backward pass instead of storing them (same results; ``graphs.layers.efficient``). Returns self."""
        set_memory_efficient(self, enabled)
        return self

    def forward_features(self, x):
        """The final feature map after ``norm_last``/``relu_last`` (before global pooling)."""
        return features_before_pool(self.features, x)

    def forward(self, x):
        x = torch.flatten(self.features(x), 1)
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


PAPER = ("Densely Connected Convolutional Networks (Huang, Liu, van der Maaten, Weinberger, CVPR 2017), "
         "https://arxiv.org/abs/1608.06993")

# name: (the arguments the builder fixes, and the published FLOPs, params, CIFAR-10 top-1 and their source)
VARIANTS = {
    "densenet_bc_100": (dict(stages=(16, 16, 16), growth=(12, 12, 12)), "292M", "0.8M", 95.49,
                        "DenseNet paper Table 2 (C10+ error 4.51%); FLOPs from the CondenseNet paper's CIFAR table"),
    "densenet_bc_190": (dict(stages=(31, 31, 31), growth=(40, 40, 40)), None, "25.6M", 96.54,
                        "DenseNet paper Table 2 (C10+ error 3.46%)"),
}


def _build(model_class, name, args, num_classes, converted, kwargs):
    check(not converted, "DenseNet-BC has no converted form; set converted to false")
    return model_class(num_classes=num_classes, **{**args, **kwargs})


for _name, (_args, _flops, _params, _top1, _source) in VARIANTS.items():
    register_variant(_name, DenseNetBC, _args, cifar_cfg(paper=PAPER, published=Published(
        _flops, _params, top1=_top1, dataset="cifar10", source=_source)), build=_build)
