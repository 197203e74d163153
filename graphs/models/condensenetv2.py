"""CondenseNetV2: "CondenseNetV2: Sparse Feature Reactivation for Deep Networks"
(Yang, Huang, Liu, Huang, Song, Huang, CVPR 2021), https://arxiv.org/abs/2104.04382.

Each dense layer is a learned group conv (``conv_1``) and a 3x3 group conv (``conv_2``), optionally
an SE layer (``se``, reduction 1) on the new features, and a sparse feature reactivation (``sfr``)
that adds a learned-sparse 1x1 projection of the new features to the layer's input:
``out = cat([x + sfr(new), new])``. Blocks from ``hs_start_block`` use hard swish, from
``se_start_block`` SE. The head is BN -> ReLU -> avg pool -> SE(r=16) -> fc -> hard swish -> classifier.
Names follow the official code (jianghaojun/CondenseNetV2); ``hs_start_block``/``se_start_block`` are
its ``HS_start_block``/``SE_start_block``. ``converted=True`` builds the deployable network (classifier
and fc unchanged); official converted files (float C x C SFR index matrices) load into it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphs.layers import HS, SELayer, _SFRDenseBlock
from utils.errors import check

from .base import ModelBase
from .condense import CondenseFamilyMixin, check_data, check_positive_int, check_stages
from .pretrained import Published, cifar_cfg, imagenet_cfg
from .registry import register_variant


class CondenseNetV2(CondenseFamilyMixin, ModelBase):
    """CondenseNetV2.

    Args:
        stages, growth: layers and growth rate per block (same length).
        bottleneck: the 1x1 layer has ``bottleneck * growth`` outputs.
        group_1x1, group_3x3: groups of the learned 1x1 and 3x3 convs; condense_factor: C (default G).
        group_trans, trans_factor: groups / condense factor of the SFR (trans_factor default group_trans).
        hs_start_block, se_start_block: 0-based first block with hard swish / with SE.
        fc_channel: width of the fc layer before the classifier; last_se_reduction: head SE reduction.
        dropout_rate: dropout inside the learned group convs (official 0).
        drop_rate: dropout before the classifier (timm's ``--drop``; default 0).
        drop_path_rate: stochastic depth of the dense layers (see ``graphs.layers.dense``), rising
            linearly from 0 at the first layer to this rate at the last (timm's rule).
        data: ``'imagenet'`` (stem stride 2, pool 7) or ``'cifar'`` (stride 1, pool 8).
        converted: build the deployable network.
    """

    flops_rule = "v2"

    def __init__(self, stages=(4, 6, 8, 10, 8), growth=(8, 16, 32, 64, 128), bottleneck=4, group_1x1=8,
                 group_3x3=8, group_trans=8, condense_factor=None, trans_factor=None, hs_start_block=2,
                 se_start_block=3, fc_channel=1024, last_se_reduction=16, dropout_rate=0.0,
                 num_classes=1000, data="imagenet", converted=False, drop_rate=0.0, drop_path_rate=0.0):
        super().__init__()
        stages, growth = check_stages(stages, growth)
        for name, v in (("bottleneck", bottleneck), ("group_1x1", group_1x1), ("group_3x3", group_3x3),
                        ("group_trans", group_trans), ("fc_channel", fc_channel),
                        ("last_se_reduction", last_se_reduction), ("num_classes", num_classes)):
            check_positive_int(name, v)
        condense_factor = group_1x1 if condense_factor is None else check_positive_int("condense_factor",
                                                                                         condense_factor)
        trans_factor = group_trans if trans_factor is None else check_positive_int("trans_factor", trans_factor)
        for name, v in (("hs_start_block", hs_start_block), ("se_start_block", se_start_block)):
            check(isinstance(v, int) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        for name, v in (("dropout_rate", dropout_rate), ("drop_rate", drop_rate), ("drop_path_rate", drop_path_rate)):
            check(isinstance(v, (int, float)) and 0 <= v < 1, f"{name} must be in [0, 1), got {v!r}")
        kind = check_data(data)
        self._cfg = dict(stages=stages, growth=growth, bottleneck=bottleneck, group_1x1=group_1x1,
                         group_3x3=group_3x3, group_trans=group_trans, condense_factor=condense_factor,
                         trans_factor=trans_factor, hs_start_block=hs_start_block,
                         se_start_block=se_start_block, fc_channel=fc_channel,
                         last_se_reduction=last_se_reduction, dropout_rate=dropout_rate,
                         num_classes=num_classes, data=data, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        self.drop_rate = float(drop_rate)
        n_layers = sum(stages)
        rates = [drop_path_rate * j / max(1, n_layers - 1) for j in range(n_layers)]
        self.stages, self.growth = stages, growth
        self._group_3x3 = group_3x3
        self.is_converted = bool(converted)
        self.num_classes = num_classes
        self.pretrained_cfg = cifar_cfg() if kind == "cifar" else imagenet_cfg()
        self._build_features(kind, lambda i, n, width, k: _SFRDenseBlock(
            n, width, k, bottleneck=bottleneck, group_1x1=group_1x1, group_3x3=group_3x3,
            group_trans=group_trans, condense_factor=condense_factor, trans_factor=trans_factor,
            activation="HS" if i >= hs_start_block else "ReLU", use_se=i >= se_start_block,
            dropout_rate=dropout_rate, converted=converted, drop_paths=rates[sum(stages[:i]):sum(stages[:i + 1])]))
        self.features.add_module("se_last", SELayer(self.num_features, reduction=last_se_reduction))
        self.fc = nn.Linear(self.num_features, fc_channel)
        self.fc_act = HS()
        self.classifier = nn.Linear(fc_channel, num_classes)
        self._initialize()

    def _initialize(self):
        # Official _initialize: kaiming fan-out for convs; EVERY BN (also the SFR's) to 1/0; Linear default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def classifier_keys(self):
        """State-dict keys of the class-specific head (``fc`` before it is kept)."""
        return ["classifier.weight", "classifier.bias"]

    @torch.no_grad()
    def reset_classifier(self, num_classes):
        """A fresh ``num_classes`` classifier with PyTorch's Linear init (the official ``_initialize``
        leaves Linear layers at their default)."""
        old = self.classifier
        self.classifier = self._new_linear(old.in_features, num_classes, old.weight, zero_bias=False)
        return self

    def forward_head(self, x):
        x = self.features.se_last(self.pool_last(x))
        x = self.fc_act(self.fc(x.flatten(1)))
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)

    def convert(self, prune_classifier=False):
        """A NEW converted model (LGC -> index + grouped conv, SFR -> grouped conv + index_add).

        The official v2 converter leaves ``fc`` and ``classifier`` untouched; ``prune_classifier`` is
        accepted (so callers can treat both families alike) and ignored.
        """
        return self._fill_converted(self._new_converted())


PAPER = ("CondenseNet V2: Sparse Feature Reactivation for Deep Networks (Yang, Jiang, Cai, Wang, Song, Huang, "
         "Tian, CVPR 2021), https://arxiv.org/abs/2104.04382")
_README = "jianghaojun/CondenseNetV2 README"


def _imagenet(g, **kw):
    return dict(bottleneck=4, group_1x1=g, group_3x3=g, group_trans=g, condense_factor=g, trans_factor=g,
                hs_start_block=2, se_start_block=3, last_se_reduction=16, data="imagenet", **kw)


# The CIFAR models' config is published nowhere; these are reconstructions: 6*n+2 convs (stages n-n-n),
# growth 8-16-32, bottleneck 4, G = C = 4 for the 1x1, 3x3 and SFR, hard swish from block 2 and SE from
# block 3 (the ImageNet models' "last 3/5 HS, last 2/5 SE" scaled to three blocks), head SE reduction 16,
# fc_channel 256. By the v2 counting rules cdnv2_110 is about 2.8x the paper's FLOPs (growth 4-8-16 comes
# close instead; see docs/papers.md).
_CIFAR = dict(growth=(8, 16, 32), bottleneck=4, group_1x1=4, group_3x3=4, group_trans=4, condense_factor=4,
              trans_factor=4, hs_start_block=1, se_start_block=2, last_se_reduction=16, fc_channel=256, data="cifar")

# name: (the arguments the builder fixes, and the README's FLOPs, params and error in %: ImageNet top-1 with
# the eval resize of the official test.py / convert_and_eval.py, or CIFAR-10)
VARIANTS = {
    "cdnv2_a": (_imagenet(8, stages=(1, 1, 4, 6, 8), growth=(8, 8, 16, 32, 64), fc_channel=828), "bicubic",
                "46M", "2.0M", 35.6),
    "cdnv2_b": (_imagenet(6, stages=(2, 4, 6, 8, 6), growth=(6, 12, 24, 48, 96), fc_channel=1024), "bicubic",
                "146M", "3.6M", 28.1),
    "cdnv2_c": (_imagenet(8, stages=(4, 6, 8, 10, 8), growth=(8, 16, 32, 64, 128), fc_channel=1024), "bilinear",
                "309M", "6.1M", 24.1),
    "cdnv2_110": (dict(_CIFAR, stages=(18, 18, 18)), None, "41M", "0.48M", 4.65),
    "cdnv2_146": (dict(_CIFAR, stages=(24, 24, 24)), None, "62M", "0.78M", 4.35),
}


def _cfg(interpolation, flops, params, error):
    if interpolation is None:
        return cifar_cfg(paper=PAPER, published=Published(
            flops, params, top1=round(100 - error, 2), dataset="cifar10",
            source=f"{_README} (CIFAR-10 error {error}%; no config published, see the builder)"))
    return imagenet_cfg(interpolation=interpolation, paper=PAPER, published=Published(
        flops, params, top1=round(100 - error, 2), source=f"{_README} (top-1 error {error}%)"))


for _name, (_args, *_published) in VARIANTS.items():
    register_variant(_name, CondenseNetV2, _args, _cfg(*_published))
