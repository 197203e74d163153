"""ReXNet v1 and ReXNet-lite.

Paper: Dongyoon Han, Sangdoo Yun, Byeongho Heo, YoungJoon Yoo, "Rethinking Channel Dimensions for
Efficient Model Design" (CVPR 2021, arXiv:2007.00992).  Official code: clovaai/rexnet
(``rexnetv1.py``, ``rexnetv1_lite.py``).

The module and parameter names are those of the official checkpoints, so the official ``.pth``
files load strictly:

ReXNetV1 (``features`` Sequential, ``output`` Sequential)::

    features.0 / .1 / .2         stem 3x3 s2 conv (no bias) / BN / SiLU
    features.3 ... features.18   16 LinearBottleneck blocks (``features.K.out.N``)
    features.19 / .20 / .21      head 1x1 conv to int(1280*w) / BN / SiLU
    features.22                  global average pool
    output.0 / output.1          Dropout / 1x1 Conv2d classifier WITH bias, weight [C, pen, 1, 1]

    block ``out`` order: [exp 1x1 conv, BN, SiLU]   (absent when t == 1)
                         dw 3x3 conv, BN,
                         [SE: ``fc.0`` conv+bias, ``fc.1`` BN, ``fc.2`` ReLU, ``fc.3`` conv+bias, ``fc.4`` Sigmoid]
                         ReLU6,
                         projection 1x1 conv, BN  (linear)

ReXNetV1Lite follows the module structure of the official ``rexnetv1_lite.py``: ``features.0..2``
stem conv/BN/ReLU6, ``features.3..18`` blocks (``out``: [exp conv, BN, ReLU6], dw conv, BN, ReLU6,
projection conv, BN), ``features.19..21`` pen conv/BN/ReLU6, a separate ``avgpool``, and
``output.0`` 1x1 conv pen->1024 (bias), ``output.1`` BN, ``output.2`` ReLU6, ``output.3`` Dropout,
``output.4`` 1x1 conv classifier (bias).

Weight files in timm's and Paddle's layouts are translated by :mod:`graphs.models.layouts`.

CIFAR option (``cifar_stem=True``): the stem conv gets stride 1 and the first stride-2 stage
(stage 2) stride 1, so the total stride is 8 instead of 32 and a 32x32 image ends in 4x4 maps.
The channel schedule, and therefore every parameter shape, is unchanged.
"""
import math

import torch
import torch.nn as nn

from graphs.layers.pool import GlobalAvgPool2d
from utils.errors import ConfigError

from .base import ModelBase
from .pretrained import Published, cifar_cfg, imagenet_cfg
from .registry import register_variant

__all__ = ["ReXNetV1", "ReXNetV1Lite", "LinearBottleneck", "SEModule", "rexnet_channels", "rexnet_lite_channels"]

STAGE_DEPTHS = (1, 2, 2, 3, 3, 5)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2)
STAGE_SE = (False, False, True, True, True, True)


# --------------------------------------------------------------------------------------------
# Channel schedules (exactly the official arithmetic: Python 3 round() = round-half-to-even)
# --------------------------------------------------------------------------------------------
def rexnet_channels(width_mult=1.0, depth_mult=1.0, input_ch=16, final_ch=180):
    """ReXNet v1 channels: ``(stem, [block in], [block out], pen)``.

    The accumulator starts at ``input_ch`` (``input_ch / w`` for w < 1) and grows by
    ``final_ch / num_blocks`` after every block but the first; each value is ``int(round(acc * w))``.
    """
    num_blocks = sum(math.ceil(d * depth_mult) for d in STAGE_DEPTHS)
    stem = 32 / width_mult if width_mult < 1.0 else 32
    acc = input_ch / width_mult if width_mult < 1.0 else input_ch
    stem_ch = int(round(stem * width_mult))
    ins, outs = [], []
    for i in range(num_blocks):
        if i == 0:
            ins.append(stem_ch)
        else:
            ins.append(int(round(acc * width_mult)))
            acc += final_ch / (num_blocks * 1.0)
        outs.append(int(round(acc * width_mult)))
    return stem_ch, ins, outs, int(1280 * width_mult)


def make_divisible(value, divisor=8, min_value=None):
    """MobileNet rounding to a multiple of ``divisor``, never more than 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def rexnet_lite_channels(multiplier=1.0, input_ch=16, final_ch=164, fix_head_stem=False, divisor=8):
    """ReXNet-lite channels ``(stem, [block in], [block out], pen)``: increments of final_ch / 15,
    each value ``make_divisible(int(round(acc * m)), 8)``; pen int(1280*m) only when m > 1."""
    num_blocks = sum(STAGE_DEPTHS)
    stem = 32 / multiplier if multiplier < 1.0 or fix_head_stem else 32
    stem_ch = make_divisible(int(round(stem * multiplier)), divisor)
    acc = input_ch / multiplier if multiplier < 1.0 else input_ch
    ins, outs = [], []
    for i in range(num_blocks):
        if i == 0:
            ins.append(stem_ch)
        else:
            ins.append(make_divisible(int(round(acc * multiplier)), divisor))
            acc += final_ch / (num_blocks - 1 * 1.0)
        outs.append(make_divisible(int(round(acc * multiplier)), divisor))
    pen = int(1280 * multiplier) if multiplier > 1 and not fix_head_stem else 1280
    return stem_ch, ins, outs, pen


def _stage_lists(depths, values):
    """Expand per-stage ``values`` to per-block lists (first-block value for strides)."""
    return [v for d, v in zip(depths, values) for _ in range(d)]


def _stage_strides(depths, strides):
    return [s if j == 0 else 1 for d, s in zip(depths, strides) for j in range(d)]


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def _conv_bn(layers, in_ch, out_ch, kernel=1, stride=1, groups=1, act=None, bn_kwargs=None):
    """Append conv (no bias) -> BN [-> act] to ``layers`` (official flat Sequential style)."""
    layers.append(nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False))
    layers.append(nn.BatchNorm2d(out_ch, **(bn_kwargs or {})))
    if act is not None:
        layers.append(act)


class SEModule(nn.Module):
    """Squeeze-excitation with a BatchNorm in the bottleneck (official ReXNet SE).

    avg-pool -> ``fc.0`` 1x1 conv (bias) C -> C//ratio -> ``fc.1`` BN -> ``fc.2`` ReLU ->
    ``fc.3`` 1x1 conv (bias) -> ``fc.4`` Sigmoid -> multiply the input.
    """

    def __init__(self, channels, se_ratio=12):
        super().__init__()
        reduced = channels // se_ratio
        self.avg_pool = GlobalAvgPool2d()
        self.fc = nn.Sequential(
            nn.Conv2d(channels, reduced, 1, bias=True),
            nn.BatchNorm2d(reduced),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced, channels, 1, bias=True),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return x * self.fc(self.avg_pool(x))


class LinearBottleneck(nn.Module):
    """Inverted residual with a linear projection and a partial shortcut.

    The shortcut (stride 1 and in <= out) adds the input to the first ``in_channels`` output
    channels; it is written with ``torch.cat`` (no in-place slice add) so autograd, TorchScript
    and ONNX export work.

    ``lite=False`` (v1): expansion SiLU, dw -> BN -> SE -> ReLU6.  ``lite=True``: ReLU6 after the
    expansion and directly after the depthwise BN, no SE.

    ``drop_path_rate`` > 0 adds stochastic depth (Huang et al., 2016) on the residual branch of blocks
    with a shortcut, before the partial add, as timm's ``rexnet.py`` places it (child ``drop_path``,
    timm's ``DropPath``; no parameters, so state dicts are unchanged).
    """

    def __init__(self, in_channels, channels, t, stride=1, use_se=False, se_ratio=12, kernel_size=3,
                 lite=False, bn_kwargs=None, drop_path_rate=0.0):
        super().__init__()
        self.use_shortcut = stride == 1 and in_channels <= channels
        self.inplace_shortcut = False    # set by fuse(): inference-only in-place (partial) shortcut
        self.in_channels = in_channels
        self.out_channels = channels
        self.stride = stride
        out = []
        if t != 1:
            dw = in_channels * t
            _conv_bn(out, in_channels, dw, act=nn.ReLU6(inplace=True) if lite else nn.SiLU(),
                     bn_kwargs=bn_kwargs)
        else:
            dw = in_channels
        _conv_bn(out, dw, dw, kernel=kernel_size, stride=stride, groups=dw, bn_kwargs=bn_kwargs,
                 act=nn.ReLU6(inplace=True) if lite else None)
        if not lite:
            if use_se:
                out.append(SEModule(dw, se_ratio))
            out.append(nn.ReLU6(inplace=True))
        self.pwl_index = len(out)       # index of the projection conv inside ``out``
        _conv_bn(out, dw, channels, bn_kwargs=bn_kwargs)
        self.out = nn.Sequential(*out)
        self.drop_path = None           # None or a module: the TorchScript-friendly optional child (timm's way)
        if drop_path_rate > 0 and self.use_shortcut:
            from timm.layers import DropPath
            self.drop_path = DropPath(drop_path_rate)

    def forward(self, x):
        out = self.out(x)
        if self.use_shortcut:
            if self.drop_path is not None:
                out = self.drop_path(out)
            if self.in_channels == self.out_channels:
                return out.add_(x) if self.inplace_shortcut else out + x
            if self.inplace_shortcut and not torch.compiler.is_compiling():
                out[:, :self.in_channels] += x    # eager only: inductor (freezing) fails on the slice write
                return out
            return torch.cat((out[:, :self.in_channels] + x, out[:, self.in_channels:]), dim=1)
        return out


# --------------------------------------------------------------------------------------------
# Shared model behaviour
# --------------------------------------------------------------------------------------------
class _ReXNetBase(ModelBase):
    flops_rule = "macs"
    lite = False
    width_arg = "width_mult"   # the constructor argument that sets the width (the variants' table fills it)
    first_block = 3            # index of the first block inside ``features``

    def _build_features(self, num_classes, cifar_stem, depths, channels, act, bn_kwargs, block_args):
        """The stem conv/BN/act, the blocks (``block_args``: per-block LinearBottleneck keywords) and the pen
        conv/BN/act, as a list for ``features``; sets the attributes they define (``feature_info``: the last
        block at every reduction, 2, 4, 8, 16, 32 for ImageNet)."""
        self.num_classes = num_classes
        self.cifar_stem = cifar_stem
        self.pretrained_cfg = cifar_cfg() if cifar_stem else imagenet_cfg()
        stage_strides = list(STAGE_STRIDES)
        stem_stride = 2
        if cifar_stem:
            stem_stride, stage_strides[1] = 1, 1
        strides = _stage_strides(depths, stage_strides)
        ts = [1] * depths[0] + [6] * sum(depths[1:])
        stem_ch, ins, outs, pen = channels
        self.num_blocks = len(outs)
        self.num_features = pen
        features = []
        _conv_bn(features, 3, stem_ch, kernel=3, stride=stem_stride, act=act(), bn_kwargs=bn_kwargs)
        for c_in, c_out, t, s, kwargs in zip(ins, outs, ts, strides, block_args):
            features.append(LinearBottleneck(c_in, c_out, t, s, bn_kwargs=bn_kwargs, **kwargs))
        _conv_bn(features, outs[-1], pen, act=act(), bn_kwargs=bn_kwargs)
        info, red = {}, stem_stride
        for j, (s, c_out) in enumerate(zip(strides, outs)):
            red *= s
            info[red] = dict(num_chs=c_out, reduction=red, module=f"features.{self.first_block + j}")
        self.feature_info = [info[r] for r in sorted(info)]
        return features

    @staticmethod
    def _drop_args(dropout_ratio, drop_rate, drop_path_rate, num_blocks):
        """``dropout_ratio`` (``drop_rate`` is timm's name for it) and timm's per-block drop-path rates
        ``drop_path_rate * j / (num_blocks - 1)`` (the first block 0, the last the full rate)."""
        if drop_rate is not None:
            if dropout_ratio != 0.2 and dropout_ratio != drop_rate:
                raise ConfigError(f"drop_rate {drop_rate} and dropout_ratio {dropout_ratio} both set the "
                                  f"classifier dropout; set only one")
            dropout_ratio = drop_rate
        if not (isinstance(drop_path_rate, (int, float)) and 0.0 <= drop_path_rate < 1.0):
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        rates = [drop_path_rate * j / max(1, num_blocks - 1) for j in range(num_blocks)]
        return dropout_ratio, rates

    @staticmethod
    def _check_args(num_classes, width, dropout_ratio, width_name):
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ConfigError(f"{width_name} must be a positive number, got {width!r}")
        if not (isinstance(dropout_ratio, (int, float)) and 0.0 <= dropout_ratio < 1.0):
            raise ConfigError(f"dropout_ratio must be in [0, 1), got {dropout_ratio!r}")

    @property
    def capabilities(self):
        return frozenset() if self.is_fused else frozenset({"fuse"})

    @torch.no_grad()
    def fuse(self):
        """Inference-only fast form: every conv -> BN pair folded into one conv with bias (the BN
        becomes an Identity), partial shortcuts added in place. Modifies and returns ``self`` in eval
        mode; same logits up to float rounding; not trainable (the official layout is gone)."""
        from torch.nn.utils.fusion import fuse_conv_bn_eval
        self.eval()
        for seq in [m for m in self.modules() if isinstance(m, nn.Sequential)]:
            for i in range(len(seq) - 1):
                a, b = seq[i], seq[i + 1]
                if isinstance(a, nn.Conv2d) and type(b) is nn.BatchNorm2d:
                    seq[i] = fuse_conv_bn_eval(a, b)
                    seq[i + 1] = nn.Identity()
        for m in self.modules():
            if isinstance(m, LinearBottleneck):
                m.inplace_shortcut = True
        self.requires_grad_(False)
        self.is_fused = True
        return self

    def blocks(self):
        return [self.features[self.first_block + j] for j in range(self.num_blocks)]

    def _classifier_index(self):
        # output.1 (v1) / output.4 (lite): the 1x1 conv classifier (a method: torch.jit.script compiles properties)
        return 4 if self.lite else 1

    def classifier_keys(self):
        """State-dict keys of the class-specific head (the lite head's pen->1024 conv/BN are kept)."""
        i = self._classifier_index()
        return [f"output.{i}.weight", f"output.{i}.bias"]

    @torch.no_grad()
    def reset_classifier(self, num_classes):
        """A fresh ``num_classes`` 1x1 conv classifier (bias) with PyTorch's default init: the official
        ``rexnetv1.py`` / ``rexnetv1_lite.py`` initialise nothing themselves."""
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        i = self._classifier_index()
        old = self.output[i]
        self.output[i] = nn.Conv2d(old.in_channels, num_classes, 1, bias=True).to(
            device=old.weight.device, dtype=old.weight.dtype)
        self.num_classes = num_classes
        return self

    def forward(self, x):
        return self.output(self.forward_head_input(x)).flatten(1)


class ReXNetV1(_ReXNetBase):
    """ReXNet v1 (Han et al., CVPR 2021), official ``rexnetv1.py`` semantics and names.

    Args: input_ch (16), final_ch (180), width_mult, depth_mult (stage depths scaled with ceil),
    num_classes, use_se, se_ratio (12; SE width = dw // se_ratio), dropout_ratio (0.2),
    bn_momentum (accepted like the official code and, like it, unused: PyTorch BN defaults),
    cifar_stem (stride-8 variant for 32x32 input, see module doc), drop_rate (timm's name for
    dropout_ratio), drop_path_rate (stochastic depth, see :class:`LinearBottleneck`).
    """

    def __init__(self, input_ch=16, final_ch=180, width_mult=1.0, depth_mult=1.0, num_classes=1000,
                 use_se=True, se_ratio=12, dropout_ratio=0.2, bn_momentum=0.9, cifar_stem=False,
                 drop_rate=None, drop_path_rate=0.0):
        super().__init__()
        if not (isinstance(depth_mult, (int, float)) and depth_mult > 0):
            raise ConfigError(f"depth_mult must be a positive number, got {depth_mult!r}")
        depths = [math.ceil(d * depth_mult) for d in STAGE_DEPTHS]
        dropout_ratio, dp_rates = self._drop_args(dropout_ratio, drop_rate, drop_path_rate, sum(depths))
        self._check_args(num_classes, width_mult, dropout_ratio, "width_mult")
        if not (isinstance(se_ratio, int) and se_ratio >= 1):
            raise ConfigError(f"se_ratio must be a positive integer, got {se_ratio!r}")
        if not (isinstance(input_ch, (int, float)) and input_ch > 0 and final_ch > 0):
            raise ConfigError(f"input_ch and final_ch must be positive, got {input_ch!r}, {final_ch!r}")
        channels = rexnet_channels(width_mult, depth_mult, input_ch, final_ch)
        stem_ch, ins, outs, pen = channels
        if min(outs) < 1 or stem_ch < 1 or pen < 1 or any(6 * c // se_ratio < 1 for c in ins[1:] if use_se):
            raise ConfigError(f"width_mult={width_mult} gives empty layers; use a larger width_mult")
        self.width_mult = width_mult
        ses = _stage_lists(depths, STAGE_SE) if use_se else [False] * sum(depths)
        features = self._build_features(
            num_classes, cifar_stem, depths, channels, nn.SiLU, None,
            [dict(use_se=se, se_ratio=se_ratio, drop_path_rate=dp) for se, dp in zip(ses, dp_rates)])
        features.append(GlobalAvgPool2d())
        self.features = nn.Sequential(*features)
        self.output = nn.Sequential(nn.Dropout(dropout_ratio), nn.Conv2d(pen, num_classes, 1, bias=True))

    def forward_features(self, x):
        """Feature map before the global pool (pen channels; 7x7 at 224): official extract_features."""
        return self.features[:-1](x)

    def forward_head_input(self, x):
        return self.features(x)


class ReXNetV1Lite(_ReXNetBase):
    """ReXNet-lite (official ``rexnetv1_lite.py``, class ``ReXNetV1_lite``): no SE, ReLU6 everywhere,
    channels rounded to multiples of 8, head avgpool -> 1x1 conv pen->1024 (bias) -> BN -> ReLU6 ->
    Dropout -> 1x1 conv classifier (bias).

    Module names follow the official lite file (``features``, ``avgpool``, ``output.0..4``; see the
    module docstring). ``kernel_conf``: one odd kernel size per stage, e.g. '333333'. ``drop_rate`` /
    ``drop_path_rate``: as :class:`ReXNetV1`.
    """
    lite = True
    width_arg = "multiplier"

    def __init__(self, fix_head_stem=False, divisible_value=8, input_ch=16, final_ch=164, multiplier=1.0,
                 num_classes=1000, dropout_ratio=0.2, bn_momentum=0.1, bn_eps=1e-5, kernel_conf="333333",
                 cifar_stem=False, drop_rate=None, drop_path_rate=0.0):
        super().__init__()
        dropout_ratio, dp_rates = self._drop_args(dropout_ratio, drop_rate, drop_path_rate, sum(STAGE_DEPTHS))
        self._check_args(num_classes, multiplier, dropout_ratio, "multiplier")
        kernel_conf = str(kernel_conf)
        if len(kernel_conf) != len(STAGE_DEPTHS) or any(c not in "13579" for c in kernel_conf):
            raise ConfigError(f"kernel_conf must be {len(STAGE_DEPTHS)} odd digits (one kernel size per "
                              f"stage, e.g. '333333'), got {kernel_conf!r}")
        if not (isinstance(divisible_value, int) and divisible_value >= 1):
            raise ConfigError(f"divisible_value must be a positive integer, got {divisible_value!r}")
        self.width_mult = multiplier
        bn_kwargs = dict(momentum=bn_momentum, eps=bn_eps)
        depths = list(STAGE_DEPTHS)
        kernels = _stage_lists(depths, [int(c) for c in kernel_conf])
        channels = rexnet_lite_channels(multiplier, input_ch, final_ch, fix_head_stem, divisible_value)
        features = self._build_features(
            num_classes, cifar_stem, depths, channels,
            lambda: nn.ReLU6(inplace=True), bn_kwargs,
            [dict(kernel_size=k, lite=True, drop_path_rate=dp) for k, dp in zip(kernels, dp_rates)])
        self.features = nn.Sequential(*features)
        self.avgpool = GlobalAvgPool2d()
        self.output = nn.Sequential(
            nn.Conv2d(self.num_features, 1024, 1, bias=True),
            nn.BatchNorm2d(1024, **bn_kwargs),
            nn.ReLU6(inplace=True),
            nn.Dropout(dropout_ratio),
            nn.Conv2d(1024, num_classes, 1, bias=True),
        )

    def forward_features(self, x):
        """Feature map before the global pool (after the pen conv/BN/ReLU6)."""
        return self.features(x)

    def forward_head_input(self, x):
        return self.avgpool(self.features(x))


# --------------------------------------------------------------------------------------------
# The published variants: one builder and one pretrained_cfg each
# --------------------------------------------------------------------------------------------
PAPER = ("Rethinking Channel Dimensions for Efficient Model Design (Han, Yun, Heo, Yoo, CVPR 2021), "
         "https://arxiv.org/abs/2007.00992")

# name: (class, width, and the clovaai/rexnet README's MACs, params, top-1, top-5)
VARIANTS = {
    "rexnet_0_9": (ReXNetV1, 0.9, "0.35G", "4.1M", 77.2, 93.5),
    "rexnet_1_0": (ReXNetV1, 1.0, "0.40G", "4.8M", 77.9, 93.9),
    "rexnet_1_3": (ReXNetV1, 1.3, "0.66G", "7.6M", 79.5, 94.7),
    "rexnet_1_5": (ReXNetV1, 1.5, "0.88G", "9.7M", 80.3, 95.2),
    "rexnet_2_0": (ReXNetV1, 2.0, "1.5G", "16M", 81.6, 95.7),
    "rexnet_3_0": (ReXNetV1, 3.0, "3.4G", "34M", 82.8, 96.2),
    "rexnet_lite_1_0": (ReXNetV1Lite, 1.0, "0.41G", "4.7M", 76.2, 92.8),
    "rexnet_lite_1_3": (ReXNetV1Lite, 1.3, "0.65G", "6.8M", 77.8, 93.8),
    "rexnet_lite_1_5": (ReXNetV1Lite, 1.5, "0.84G", "8.3M", 78.6, 94.2),
    "rexnet_lite_2_0": (ReXNetV1Lite, 2.0, "1.5G", "13M", 80.2, 95.0),
}
WIDTHS = {name: variant[1] for name, variant in VARIANTS.items()}


def _build(model_class, name, args, num_classes, converted, kwargs):
    if converted:
        raise ConfigError(f"{name} has no converted (deployment) form; set converted=false")
    (key, width), = args.items()
    if key in kwargs:
        raise ConfigError(f"{name} fixes {key}={width}; build {model_class.__name__} directly for another width")
    return model_class(**args, num_classes=num_classes, **kwargs)


def _cfg(lite, macs, params, top1, top5):
    # trained with timm; evaluated as timm does: resize 256 bicubic (crop_pct 0.875), centre-crop 224
    return imagenet_cfg(paper=PAPER, classifier="output.4" if lite else "output.1", first_conv="features.0",
                        published=Published(macs, params, top1=top1, top5=top5,
                                            source="clovaai/rexnet README (FLOPs are multiply-accumulates)"))


for _name, (_cls, _width, *_published) in VARIANTS.items():
    register_variant(_name, _cls, {_cls.width_arg: _width}, _cfg(_cls.lite, *_published), build=_build)
