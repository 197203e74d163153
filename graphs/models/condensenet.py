"""CondenseNet: "CondenseNet: An Efficient DenseNet using Learned Group Convolutions"
(Huang, Liu, van der Maaten, Weinberger, CVPR 2018), https://arxiv.org/abs/1711.09224.

Module and buffer names follow the official code (ShichenLiu/CondenseNet), so official checkpoints
load strictly: ``features.init_conv``, ``features.denseblock_%d.denselayer_%d.conv_1`` (learned group
conv) / ``conv_2`` (3x3 group conv), ``features.transition_%d``, ``features.norm_last``,
``relu_last``, ``pool_last`` and ``classifier``. ``converted=True`` builds the deployable network
(index + grouped conv layers, classifier pruned to half its inputs) that ``convert()`` produces and
official ``converted_*`` files hold.
"""
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphs.layers import CondensedLGC, CondensedSFR, CondensingModule, SFR, _DenseBlock, _Transition
from graphs.layers.dense import features_before_pool
from graphs.layers.efficient import set_memory_efficient
from graphs.layers.fused import FusedDenseBlock
from graphs.layers.lgc import stage_for_progress
from utils.errors import ConfigError, check
from utils.model_cfg import Published

from .base import ModelBase, cifar_cfg, imagenet_cfg
from .registry import register_variant

_DATA = {"cifar": "cifar", "cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet"}


def check_data(data):
    check(data in _DATA, f"unknown data {data!r}; use 'cifar' (stem stride 1, final pool 8) or "
                         f"'imagenet' (stem stride 2, final pool 7)")
    return _DATA[data]


def check_int_list(name, values, min_value=1):
    check(isinstance(values, (list, tuple)) and len(values) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= min_value for v in values),
          f"{name} must be a non-empty list of integers >= {min_value}, got {values!r}")
    return tuple(values)


def check_positive_int(name, value):
    check(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
          f"{name} must be a positive integer, got {value!r}")
    return value


def init_weights_v1(model: nn.Module) -> None:
    """The official CondenseNet (and its DenseNet-BC) init: conv weights normal(0, sqrt(2 / (k*k*out)))
    (He, fan-out), BN weight 1 / bias 0, Linear bias 0 (Linear weight keeps PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


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


# ------------------------------------------------------------------------------------------------
# Shared by CondenseNet and CondenseNetV2
# ------------------------------------------------------------------------------------------------
class CondenseFamilyMixin:
    """Condensation schedule, conversion weight copy and reuse matrices (weight-file hints: layouts.py)."""

    @property
    def capabilities(self):
        if self.is_converted:
            return frozenset() if self.is_fused else frozenset({"fuse"})
        return frozenset({"condense", "convert", "fuse", "memory_efficient", "reuse_maps"})

    def condensing_modules(self):
        """The LGC / SFR layers (cached: the structure of a built model does not change)."""
        cache = self.__dict__.get("_condensing_cache")
        if cache is None:
            cache = [m for m in self.modules() if isinstance(m, CondensingModule)]
            self.__dict__["_condensing_cache"] = cache
        return cache

    def set_progress(self, progress):
        """Apply the condensation schedule for training progress ``progress`` in [0, 1] (host-side).

        Every pending pruning event is applied (also after a jump over several stages); returns the
        number of events applied.
        """
        events = 0
        for m in self.condensing_modules():
            events += m.advance(stage_for_progress(progress, m.condense_factor))
        return events

    def set_memory_efficient(self, enabled=True):
        """Memory-efficient training: every LGC, SFR and 3x3 ``Conv`` recomputes its concatenation,
        BN and activation in the backward pass instead of storing them (same results; see
        ``graphs.layers.efficient``). Returns ``self``."""
        set_memory_efficient(self, enabled)
        return self

    @torch.no_grad()
    def fuse(self):
        """Inference-only fast form (``graphs.layers.fused``): BN folded into the grouped 1x1 conv, dense
        blocks in one preallocated buffer, in-place / single-kernel activations. Modifies and returns a
        converted model in eval mode; a training-time model is converted first (``self`` unchanged).
        Same logits as the converted model up to float rounding; not trainable, not for checkpoints."""
        if not self.is_converted:
            return self.convert().fuse()
        self.eval()
        for name, child in list(self.features.named_children()):
            if name.startswith("denseblock_") and not isinstance(child, FusedDenseBlock):
                setattr(self.features, name, FusedDenseBlock(child))
        self.requires_grad_(False)
        self.is_fused = True
        return self

    def pool_last(self, x):
        """The official fixed-size average pool of the last feature map (8x8 for CIFAR, 7x7 for ImageNet); a
        smaller map is one sentence instead of a pooling error deep inside."""
        k = self.features.pool_last.kernel_size
        if min(x.shape[-2:]) < k:
            side = k * self.feature_info[-1]["reduction"]
            raise ConfigError(f"{type(self).__name__} ends in the official {k}x{k} average pool, so it needs "
                              f"{side}x{side} inputs, got a {x.shape[-2]}x{x.shape[-1]} feature map from a smaller "
                              f"image; set input_size to {side} or use images of that size")
        return self.features.pool_last(x)

    def sync_condensation_state(self):
        """Refresh every layer's host-side stage from its buffers (after copying masks by hand)."""
        for m in self.condensing_modules():
            m.sync_from_buffers()

    @torch.no_grad()
    def reset_condensation(self):
        """Restart condensation (the ``recondense`` option): every mask back to all-ones, stage and
        count to 0, so the schedule prunes again from the current weights. Returns ``self``."""
        check(not self.is_converted, "a converted model has no masks to reset; recondense needs the "
                                     "training-time model (converted=false)")
        for m in self.condensing_modules():
            m._mask.fill_(1.0)
            m._stage.zero_()
            m._count.zero_()
            m.sync_from_buffers()
        return self

    def _new_linear(self, in_features, num_classes, like, zero_bias):
        check_positive_int("num_classes", num_classes)
        linear = nn.Linear(in_features, num_classes).to(device=like.device, dtype=like.dtype)
        if zero_bias:
            nn.init.zeros_(linear.bias)
        self.num_classes = num_classes
        self._cfg["num_classes"] = num_classes
        return linear

    def condensation_stage(self):
        """(min stage, final stage) over the condensing layers; (0, 0) for a converted model."""
        mods = self.condensing_modules()
        if not mods:
            return 0, 0
        return min(m.stage for m in mods), max(m.final_stage for m in mods)

    def _check_convertible(self):
        check(not self.is_converted, "this model is already converted; convert() needs the training-time model")
        for name, m in self.named_modules():
            if isinstance(m, CondensingModule) and m.stage < m.final_stage:
                raise ConfigError(f"{name} is at condensation stage {m.stage} of {m.final_stage}; finish "
                                  f"condensation (train past progress 0.5, or set_progress(1.0)) before "
                                  f"converting")

    @torch.no_grad()
    def _fill_converted(self, new, skip_prefixes=()):
        """Copy every key of ``self`` that ``new`` has with the same shape, then map LGC/SFR layers."""
        src_modules = dict(self.named_modules())
        converted = []
        for name, m in new.named_modules():
            if isinstance(m, CondensedLGC):
                m.load_from_lgc(src_modules[name])
                converted.append(name + ".")
            elif isinstance(m, CondensedSFR):
                m.load_from_sfr(src_modules[name])
                converted.append(name + ".")
        skip = tuple(converted) + tuple(skip_prefixes)
        dst = new.state_dict()
        for k, v in self.state_dict().items():
            if k.startswith(skip) or k not in dst:
                continue
            if dst[k].shape != v.shape:
                raise ConfigError(f"cannot map {k} during conversion ({list(v.shape)} vs {list(dst[k].shape)})")
            dst[k].copy_(v)
        new.pretrained_cfg = self.pretrained_cfg
        new.train(self.training)
        return new

    # ---- Figure 7(d)-style reuse heatmaps ------------------------------------------------------
    @torch.no_grad()
    def reuse_matrices(self):
        """Per-source connection strengths of every dense layer (unconverted model).

        Returns ``{'lgc': M}`` (v2 also ``'sfr'``), each M of shape [n_layers, n_layers + 1]: row t =
        dense layer t (all blocks in order), column 0 = stem features, column j = dense layer j's new
        features. LGC: mean over the source's input channels of the column L1 of |w*mask|; SFR: mean
        over the source's channels of the row L1 of |w*mask|. Rows are divided by their max; NaN where
        the source is not an input of the target.
        """
        check(not self.is_converted, "reuse_matrices needs the training-time (unconverted) model")
        layers = [m for _, m in self.dense_layers()]
        n = len(layers)
        segments = [(0, 0, self.features.init_conv.out_channels)]
        out = {"lgc": np.full((n, n + 1), np.nan)}
        has_sfr = all(isinstance(getattr(l, "sfr", None), SFR) for l in layers) and n > 0
        if has_sfr:
            out["sfr"] = np.full((n, n + 1), np.nan)
        for t, layer in enumerate(layers):
            lgc = layer.conv_1
            col = (lgc.conv.weight * lgc.mask).abs().view(lgc.out_channels, lgc.in_channels).sum(0)
            col = col.float().cpu().numpy()
            row_l1 = None
            if has_sfr:
                s = layer.sfr
                row_l1 = (s.conv.weight * s.mask).abs().view(s.out_channels, s.in_channels).sum(1)
                row_l1 = row_l1.float().cpu().numpy()
            for src, a, b in segments:
                out["lgc"][t, src] = col[a:b].mean()
                if row_l1 is not None:
                    out["sfr"][t, src] = row_l1[a:b].mean()
            width = segments[-1][2]
            segments.append((t + 1, width, width + layer.conv_2.conv.out_channels))
        for m in out.values():
            for t in range(n):
                mx = np.nanmax(m[t]) if np.any(np.isfinite(m[t])) else np.nan
                if np.isfinite(mx) and mx > 0:
                    m[t] /= mx
        return out

    def dense_layers(self):
        """[(name, layer)] of the dense layers in forward order."""
        return [(name, m) for name, m in self.named_modules()
                if re.fullmatch(r"features\.denseblock_\d+\.denselayer_\d+", name)]

    def _feature_info(self, reductions, block_channels):
        info = []
        n = len(block_channels)
        for i, (red, ch) in enumerate(zip(reductions, block_channels)):
            module = f"features.denseblock_{i + 1}" if i < n - 1 else "features.relu_last"
            info.append(dict(num_chs=ch, reduction=red, module=module))
        return info


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
        stages = check_int_list("stages", stages)
        growth = check_int_list("growth", growth)
        check(len(stages) == len(growth), f"stages {list(stages)} and growth {list(growth)} must have the "
                                          f"same length (one growth rate per block)")
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
        stride, pool = (1, 8) if kind == "cifar" else (2, 7)
        self.pretrained_cfg = cifar_cfg() if kind == "cifar" else imagenet_cfg(interpolation="bilinear")

        self.features = nn.Sequential()
        width = 2 * growth[0]
        self.features.add_module("init_conv", nn.Conv2d(3, width, 3, stride=stride, padding=1, bias=False))
        reductions, block_channels = [], []
        red = stride
        for i, (n, k) in enumerate(zip(stages, growth)):
            self.features.add_module(f"denseblock_{i + 1}", _DenseBlock(
                n, width, k, bottleneck=bottleneck, group_1x1=group_1x1, group_3x3=group_3x3,
                condense_factor=condense_factor, dropout_rate=dropout_rate, converted=converted))
            width += n * k
            reductions.append(red)
            block_channels.append(width)
            if i != len(stages) - 1:
                self.features.add_module(f"transition_{i + 1}", _Transition())
                red *= 2
        self.features.add_module("norm_last", nn.BatchNorm2d(width))
        self.features.add_module("relu_last", nn.ReLU(inplace=True))
        self.features.add_module("pool_last", nn.AvgPool2d(pool))
        self.num_features = width
        if converted and prune_classifier:
            self.classifier = CondensingLinear(width, num_classes, 0.5)
        else:
            self.classifier = nn.Linear(width, num_classes)
        self.feature_info = self._feature_info(reductions, block_channels)
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

    def forward_features(self, x):
        """The final feature map after ``norm_last``/``relu_last`` (before global pooling)."""
        return features_before_pool(self.features, x)

    def forward_head(self, x):
        x = self.pool_last(x).flatten(1)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    def convert(self, prune_classifier=True):
        """A NEW converted model (grouped convs; classifier pruned to half its inputs unless told not to)."""
        self._check_convertible()
        ref = next(self.parameters())
        new = CondenseNet(**self._cfg, converted=True, prune_classifier=prune_classifier)
        new.to(device=ref.device, dtype=ref.dtype)
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
