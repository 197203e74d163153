"""What the CondenseNet family shares: argument checks, the official init, the ``features`` stage loop
(also DenseNet-BC's) and :class:`CondenseFamilyMixin`, the behaviour of CondenseNet and CondenseNetV2.

Module names are those of the official code (ShichenLiu/CondenseNet, jianghaojun/CondenseNetV2), so
official checkpoints load strictly: ``features.init_conv``, ``features.denseblock_%d``,
``features.transition_%d``, ``features.norm_last``, ``relu_last`` and ``pool_last``.
"""
import re
from typing import Callable, List, Tuple

import numpy as np
import torch
import torch.nn as nn

from graphs.layers import CondensedLGC, CondensedSFR, CondensingModule, SFR, _Transition
from graphs.layers.dense import features_before_pool
from graphs.layers.efficient import set_memory_efficient
from graphs.layers.fused import FusedDenseBlock
from graphs.layers.lgc import stage_for_progress
from utils.errors import ConfigError, check

_DATA = {"cifar": "cifar", "cifar10": "cifar", "cifar100": "cifar", "imagenet": "imagenet"}


def check_data(data):
    check(data in _DATA, f"unknown data {data!r}; use 'cifar' (stem stride 1, final pool 8) or "
                         f"'imagenet' (stem stride 2, final pool 7)")
    return _DATA[data]


def _check_int_list(name, values, min_value=1):
    check(isinstance(values, (list, tuple)) and len(values) > 0
          and all(isinstance(v, int) and not isinstance(v, bool) and v >= min_value for v in values),
          f"{name} must be a non-empty list of integers >= {min_value}, got {values!r}")
    return tuple(values)


def check_stages(stages, growth):
    """``stages`` and ``growth`` as tuples of positive integers, one growth rate per block."""
    stages = _check_int_list("stages", stages)
    growth = _check_int_list("growth", growth)
    check(len(stages) == len(growth), f"stages {list(stages)} and growth {list(growth)} must have the "
                                      f"same length (one growth rate per block)")
    return stages, growth


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


def dense_features(stages, growth, stride: int, block: Callable, transition: Callable,
                   pool: nn.Module) -> Tuple[nn.Sequential, List[dict], int]:
    """The official ``features`` Sequential of a dense network, its ``feature_info`` and its output width.

    ``init_conv`` (3x3, ``2 * growth[0]`` channels, ``stride``), then per block i ``denseblock_{i+1}`` =
    ``block(i, stages[i], in_channels, growth[i])`` and, between blocks, ``transition_{i+1}`` from
    ``transition(in_channels) -> (module, out_channels)`` (halving the map), then ``norm_last``,
    ``relu_last`` and ``pool``. ``feature_info``: each block's output, the last one at ``relu_last``.
    """
    width = 2 * growth[0]
    features = nn.Sequential()
    features.add_module("init_conv", nn.Conv2d(3, width, 3, stride=stride, padding=1, bias=False))
    info, reduction = [], stride
    for i, (n, k) in enumerate(zip(stages, growth)):
        features.add_module(f"denseblock_{i + 1}", block(i, n, width, k))
        width += n * k
        last = i == len(stages) - 1
        info.append(dict(num_chs=width, reduction=reduction,
                         module="features.relu_last" if last else f"features.denseblock_{i + 1}"))
        if not last:
            module, width = transition(width)
            features.add_module(f"transition_{i + 1}", module)
            reduction *= 2
    features.add_module("norm_last", nn.BatchNorm2d(width))
    features.add_module("relu_last", nn.ReLU(inplace=True))
    features.add_module("pool_last", pool)
    return features, info, width


class CondenseFamilyMixin:
    """What CondenseNet and CondenseNetV2 share: the ``features`` stages, condensation schedule, conversion
    weight copy, fused form and reuse matrices (their weight-file hints are in :mod:`graphs.models.layouts`)."""

    def _build_features(self, kind, block):
        """``features`` (stride 1 and final pool 8 for ``kind`` 'cifar', 2 and 7 for 'imagenet') with
        ``block(i, num_layers, in_channels, growth)`` as dense block i; sets ``feature_info``/``num_features``."""
        stride, pool = (1, 8) if kind == "cifar" else (2, 7)
        self.features, self.feature_info, self.num_features = dense_features(
            self.stages, self.growth, stride, block, lambda width: (_Transition(), width), nn.AvgPool2d(pool))

    def forward_features(self, x):
        """The final feature map after ``norm_last``/``relu_last`` (before global pooling)."""
        return features_before_pool(self.features, x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

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

    def _new_converted(self, **kwargs):
        """An empty converted model of this one's configuration, on its device and dtype (``convert`` fills it)."""
        check(not self.is_converted, "this model is already converted; convert() needs the training-time model")
        for name, m in self.named_modules():
            if isinstance(m, CondensingModule) and m.stage < m.final_stage:
                raise ConfigError(f"{name} is at condensation stage {m.stage} of {m.final_stage}; finish "
                                  f"condensation (train past progress 0.5, or set_progress(1.0)) before "
                                  f"converting")
        ref = next(self.parameters())
        return type(self)(**self._cfg, converted=True, **kwargs).to(device=ref.device, dtype=ref.dtype)

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
