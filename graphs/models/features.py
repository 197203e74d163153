"""Multi-scale feature maps of a classification model: the one mechanism behind :class:`FeatureExtractor`
(the Python API) and the detection backbones (:mod:`graphs.detection.backbones`).

Every model in this project exposes:

- ``model.forward_features(x)``: the last feature map before global pooling (N, C, H/r, W/r), where r
  is the model's total stride (32 for the ImageNet models, 8 for the CIFAR ones; for DenseNet-BC and
  the CondenseNets it is taken after the final BN-ReLU, for ReXNet after the last 1x1 head conv).
- ``model.feature_info``: a list of ``dict(num_chs=int, reduction=int, module='dotted.module.name')``,
  one per natural output stride, ordered by reduction: the output of ``module`` is a map with
  ``num_chs`` channels at 1/``reduction`` of the input's height and width.

A network's stages are :func:`feature_stages` of its ``feature_info`` (one per output stride, the
deepest module at that stride); a network that publishes none (the torchvision baselines under
detection) gets one from :func:`probe_feature_info`. The detection body keeps the ``features`` children
up to the deepest tapped stage; :class:`FeatureExtractor` taps the stages' modules with forward hooks, so
it works on any model that publishes ``feature_info`` (no forward re-implementation)::

    fx = FeatureExtractor(model, reductions=(8, 16, 32))
    c3, c4, c5 = fx(images)            # fx.channels == [num_chs, ...], fx.reductions == [8, 16, 32]

The whole model runs (including the classifier, whose output is discarded); the hooks keep the
outputs as they are (with autograd, so the extractor can be fine-tuned). Hooks are removed with
:meth:`FeatureExtractor.remove` or on ``with FeatureExtractor(...) as fx:`` exit.
"""
from typing import List

import torch
from torch import nn

from utils.errors import ConfigError

__all__ = ["FeatureExtractor", "feature_shapes", "feature_stages", "probe_feature_info"]


def feature_stages(feature_info: list) -> List[dict]:
    """One ``dict(num_chs, reduction, module)`` per output stride of ``feature_info``, by increasing
    reduction; where several entries share a reduction, the last one (the deepest module) is kept."""
    by_reduction = {}
    for entry in feature_info:
        by_reduction[int(entry["reduction"])] = dict(entry, reduction=int(entry["reduction"]),
                                                     num_chs=int(entry["num_chs"]))
    return [by_reduction[r] for r in sorted(by_reduction)]


@torch.no_grad()
def probe_feature_info(features: nn.Sequential, size: int = 64) -> List[dict]:
    """``feature_info`` of a network that publishes none: each child of ``features`` (named
    ``features.<child>``) with the channels and output stride of one pass of a ``size`` x ``size`` zero image."""
    was = features.training
    features.eval()
    x = torch.zeros(1, 3, size, size)
    info = []
    try:
        for child, module in features.named_children():
            x = module(x)
            info.append(dict(num_chs=x.shape[1], reduction=size // x.shape[-1], module=f"features.{child}"))
    finally:
        features.train(was)
    return info


class FeatureExtractor(nn.Module):
    """Feature maps of ``model`` at the requested ``reductions`` (strides), via forward hooks.

    ``reductions``: an iterable of ints present in ``model.feature_info`` (default (8, 16, 32), the usual
    FPN strides of an ImageNet model), or None for every entry of ``feature_info``. When several entries
    share a reduction, the last one (the deepest module at that stride) is used. A reduction the model
    does not have raises ConfigError.
    """

    def __init__(self, model, reductions=(8, 16, 32)):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not isinstance(info, (list, tuple)) or not info:
            raise ConfigError(f"{type(model).__name__} has no feature_info; it cannot be used as a "
                              f"multi-scale feature extractor")
        by_reduction = {e["reduction"]: e for e in feature_stages(info)}
        if reductions is None:
            reductions = sorted(by_reduction)
        try:
            reductions = [int(r) for r in reductions]
        except (TypeError, ValueError):
            raise ConfigError(f"reductions must be a list of integers, got {reductions!r}") from None
        if not reductions:
            raise ConfigError("reductions must list at least one stride")
        missing = [r for r in reductions if r not in by_reduction]
        if missing:
            raise ConfigError(f"{type(model).__name__} has no feature map at reduction {missing[0]}; "
                              f"available reductions are {sorted(by_reduction)}")
        self.model = model
        self.reductions = reductions
        self.feature_info = [by_reduction[r] for r in reductions]
        self.channels = [int(e["num_chs"]) for e in self.feature_info]
        self.module_names = [e["module"] for e in self.feature_info]
        modules = dict(model.named_modules())
        self._outputs = {}
        self._handles = []
        for name in dict.fromkeys(self.module_names):
            if name not in modules:
                raise ConfigError(f"{type(model).__name__}.feature_info names module {name!r}, which the "
                                  f"model does not have")
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name):
        def hook(module, inputs, output):
            self._outputs[name] = output
        return hook

    def forward(self, x):
        """List of feature maps, one per entry of ``self.reductions`` (same order)."""
        self._outputs = {}
        try:
            self.model(x)
            missing = [n for n in self.module_names if n not in self._outputs]
            if missing:
                raise RuntimeError(f"module {missing[0]!r} did not run in the forward pass")
            return [self._outputs[n] for n in self.module_names]
        finally:
            self._outputs = {}

    def remove(self):
        """Remove the forward hooks from the model."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def extra_repr(self):
        return f"reductions={self.reductions}, channels={self.channels}, modules={self.module_names}"


@torch.no_grad()
def feature_shapes(model, input_size, reductions=None):
    """(C, H, W) of each tapped map for one input of ``input_size`` (a convenience for docs and checks)."""
    with FeatureExtractor(model, reductions) as fx:
        was = model.training
        model.eval()
        try:
            feats = fx(torch.zeros(1, *input_size))
        finally:
            model.train(was)
    return [tuple(f.shape[1:]) for f in feats]
