"""CondenseNet: "CondenseNet: An Efficient DenseNet using Learned Group Convolutions"
(Huang, Liu, van der Maaten, Weinberger, CVPR 2018), https://arxiv.org/abs/1711.09224.

Module and buffer names follow the official code (ShichenLiu/CondenseNet), so official checkpoints
load strictly: ``features.init_conv``, ``features.denseblock_%d.denselayer_%d.conv_1`` (learned group
conv) / ``conv_2`` (3x3 group conv), ``features.transition_%d``, ``features.norm_last``,
``relu_last``, ``pool_last`` and ``classifier``. ``converted=True`` builds the deployable network
(index + grouped conv layers, classifier pruned to half its inputs) that ``convert()`` produces and
official ``converted_*`` files hold.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphs.layers import _DenseBlock
from utils.errors import check

from .base import ModelBase
from .condense import CondenseFamilyMixin, check_data, check_positive_int, check_stages, init_weights_v1
from .pretrained import Published, cifar_cfg, imagenet_cfg
from .registry import register_variant


class CondensingLinear(nn.Module):
    """Classifier pruned at conversion: keeps the ``int(keep*in)`` inputs with the largest L1 column norm.

    The ``index`` is stored in ascending-norm order, as the official ``CondensingLinear`` does.
    """

    def __init__(self, in_features, out_features, keep=0.5):
        super().__init__()
        self.in_features = int(in_features * keep)
        self.register_buffer("index", torch.zeros(self.in_features, dtype=torch.long))
        self.linear = nn.Linear(self.in_features, out_features)

    @torch.no_grad()
    def load_from_linear(self, linear):
        norms = linear.weight.abs().sum(0)
        order = norms.sort()[1]
        index = order[linear.in_features - self.in_features:]
        self.index.copy_(index)
        self.linear.weight.copy_(linear.weight[:, index])
        self.linear.bias.copy_(linear.bias)
        return self

    def forward(self, x):
        return self.linear(x.index_select(1, self.index))


class CondenseNet(CondenseFamilyMixin, ModelBase):
    """CondenseNet (v1).

    Args:
        stages: dense layers per block, e.g. (14, 14, 14).
        growth: growth rate per block (doubles per block in the paper), same length as ``stages``.
        bottleneck: width of the 1x1 layer is ``bottleneck * growth``.
        group_1x1, group_3x3: groups G of the learned 1x1 and of the 3x3 convs.
        condense_factor: C (default ``group_1x1``); the 1x1 keeps ``in/C`` inputs per group.
        dropout_rate: dropout inside the learned group convs (official default 0).
        drop_rate: dropout before the classifier (timm's ``--drop``; default 0).
        num_classes: classifier width.
        data: ``'cifar'`` (stem stride 1, final pool 8) or ``'imagenet'`` (stride 2, pool 7).
        converted: build the deployable network (load converted checkpoints into it).
        prune_classifier: with ``converted``, the classifier is the official half-width
            ``CondensingLinear`` (keys ``classifier.index``/``classifier.linear.*``); else a Linear.
    """

    flops_rule = "v1"

    def __init__(self, stages=(14, 14, 14), growth=(8, 16, 32), bottleneck=4, group_1x1=4, group_3x3=4,
                 condense_factor=None, dropout_rate=0.0, num_classes=10, data="cifar", converted=False,
                 prune_classifier=True, drop_rate=0.0):
        super().__init__()
        stages, growth = check_stages(stages, growth)
        for name, v in (("bottleneck", bottleneck), ("group_1x1", group_1x1), ("group_3x3", group_3x3),
                        ("num_classes", num_classes)):
            check_positive_int(name, v)
        condense_factor = group_1x1 if condense_factor is None else check_positive_int("condense_factor",
                                                                                         condense_factor)
        for name, v in (("dropout_rate", dropout_rate), ("drop_rate", drop_rate)):
            check(isinstance(v, (int, float)) and 0 <= v < 1, f"{name} must be in [0, 1), got {v!r}")
        kind = check_data(data)
        self._cfg = dict(stages=stages, growth=growth, bottleneck=bottleneck, group_1x1=group_1x1,
                         group_3x3=group_3x3, condense_factor=condense_factor, dropout_rate=dropout_rate,
                         num_classes=num_classes, data=data, drop_rate=drop_rate)
        self.drop_rate = float(drop_rate)
        self.stages, self.growth = stages, growth
        self._group_3x3 = group_3x3
        self.is_converted = bool(converted)
        self.num_classes = num_classes
        self.pretrained_cfg = cifar_cfg() if kind == "cifar" else imagenet_cfg(interpolation="bilinear")
        self._build_features(kind, lambda i, n, width, k: _DenseBlock(
            n, width, k, bottleneck=bottleneck, group_1x1=group_1x1, group_3x3=group_3x3,
            condense_factor=condense_factor, dropout_rate=dropout_rate, converted=converted))
        if converted and prune_classifier:
            self.classifier = CondensingLinear(self.num_features, num_classes, 0.5)
        else:
            self.classifier = nn.Linear(self.num_features, num_classes)
        init_weights_v1(self)

    def classifier_keys(self):
        """State-dict keys of the class-specific head (a pruned classifier's ``index`` is not one of them)."""
        return [f"classifier.{k}" for k in self.classifier.state_dict() if k != "index"]

    @torch.no_grad()
    def reset_classifier(self, num_classes):
        """A fresh ``num_classes`` classifier initialised as ``init_weights_v1`` does (PyTorch's Linear weight,
        zero bias). The converted model's pruned classifier keeps its learned input ``index``."""
        old = self.classifier
        if isinstance(old, CondensingLinear):
            new = CondensingLinear(self.num_features, num_classes, 0.5).to(old.index.device)
            new.linear = self._new_linear(old.in_features, num_classes, old.linear.weight, zero_bias=True)
            new.index.copy_(old.index)
        else:
            new = self._new_linear(old.in_features, num_classes, old.weight, zero_bias=True)
        self.classifier = new
        return self

    def forward_head(self, x):
        x = self.pool_last(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)

    def convert(self, prune_classifier=True):
        """A NEW converted model (grouped convs; classifier pruned to half its inputs unless told not to)."""
        new = self._new_converted(prune_classifier=prune_classifier)
        skip = ("classifier.",) if prune_classifier else ()
        self._fill_converted(new, skip)
        if prune_classifier:
            new.classifier.load_from_linear(self.classifier)
        return new


PAPER = ("CondenseNet: An Efficient DenseNet using Learned Group Convolutions (Huang, Liu, van der Maaten, "
         "Weinberger, CVPR 2018), https://arxiv.org/abs/1711.09224")
_README = "ShichenLiu/CondenseNet README"
_CIFAR = dict(growth=(8, 16, 32), bottleneck=4, group_1x1=4, group_3x3=4, condense_factor=4, data="cifar")
_IMAGENET = dict(stages=(4, 6, 8, 10, 8), growth=(8, 16, 32, 64, 128), bottleneck=4, data="imagenet")

# name: (the arguments the builder fixes, and the README's FLOPs, params and error in %: CIFAR-10, or
# ImageNet top-1/top-5 of the converted model)
VARIANTS = {
    "condensenet_50": (dict(_CIFAR, stages=(8, 8, 8)), "28.6M", "0.22M", 6.22),
    "condensenet_74": (dict(_CIFAR, stages=(12, 12, 12)), "51.9M", "0.41M", 5.28),
    "condensenet_86": (dict(_CIFAR, stages=(14, 14, 14)), "65.8M", "0.52M", 5.06),
    "condensenet_98": (dict(_CIFAR, stages=(16, 16, 16)), "81.3M", "0.65M", 4.83),
    "condensenet_110": (dict(_CIFAR, stages=(18, 18, 18)), "98.2M", "0.79M", 4.63),
    "condensenet_122": (dict(_CIFAR, stages=(20, 20, 20)), "116.7M", "0.95M", 4.48),
    # 600 epochs; growth 12-24-48 is not written in the official code: it reproduces the published FLOPs/params
    "condensenet_182": (dict(_CIFAR, stages=(30, 30, 30), growth=(12, 24, 48)), "513M", "4.2M", 3.76),
    "condensenet_74_g4": (dict(_IMAGENET, group_1x1=4, group_3x3=4, condense_factor=4), "529M", "4.8M", (26.2, 8.3)),
    "condensenet_74_g8": (dict(_IMAGENET, group_1x1=8, group_3x3=8, condense_factor=8), "274M", "2.9M", (29.0, 10.0)),
}


def _cfg(args, flops, params, error):
    if args["data"] == "cifar":
        return cifar_cfg(paper=PAPER, published=Published(flops, params, top1=round(100 - error, 2), dataset="cifar10",
                                                          source=f"{_README} (CIFAR-10 error {error}%)"))
    error1, error5 = error
    return imagenet_cfg(interpolation="bilinear", paper=PAPER, published=Published(
        flops, params, top1=round(100 - error1, 2), top5=round(100 - error5, 2),
        source=f"{_README} (top-1/top-5 error {error1}/{error5}%; converted model)"))


for _name, (_args, *_published) in VARIANTS.items():
    register_variant(_name, CondenseNet, _args, _cfg(_args, *_published))
