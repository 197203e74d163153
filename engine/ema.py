"""Exponential moving average of the weights, updated with foreach kernels (no Python loop per tensor).

Parameters and BatchNorm running statistics are averaged; every other buffer (condensation masks,
counters, stages, indices) is copied so that the EMA model stays a valid, binary-masked network —
as the official CondenseNetV2 training code does.

Warmup (``warmup=True``) is timm's ``ModelEmaV3`` decay warmup (timm/utils/model_ema.py,
``ModelEmaV3.get_decay``, after @crowsonkb): with ``s = max(0, step - 1)`` the optimizer steps before
this update, the decay is 0 at ``s = 0`` (the EMA starts as a copy) and then
``max(min(decay, 1 - (1 + s / gamma) ** -power), 0)`` with timm's defaults gamma = 1, power = 2/3, so
early, poor weights fade out quickly instead of dominating the average for ~1/(1 - decay) steps.
"""
import copy

import torch
from torch import nn

from utils.errors import ConfigError


def check_ema(config) -> None:
    if config.ema_warmup and not config.ema:
        raise ConfigError("ema_warmup warms up the EMA: it needs ema true")


class ModelEma:
    def __init__(self, model, decay, warmup=False, warmup_gamma=1.0, warmup_power=2 / 3):
        self.decay = decay
        self.warmup, self.warmup_gamma, self.warmup_power = warmup, warmup_gamma, warmup_power
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._bind(model)

    def _bind(self, model):
        averaged = {id(m.running_mean) for m in model.modules()
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None}
        averaged |= {id(m.running_var) for m in model.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None}
        src_buffers = dict(model.named_buffers())
        self._avg_src = [p for p in model.parameters()]
        self._avg_dst = [p for p in self.module.parameters()]
        self._copy_src, self._copy_dst = [], []
        for name, buf in self.module.named_buffers():
            src = src_buffers[name]
            (self._avg_src if id(src) in averaged else self._copy_src).append(src)
            (self._avg_dst if id(src) in averaged else self._copy_dst).append(buf)

    def decay_at(self, step=None):
        """The decay of the update after optimizer step ``step`` (1-based; host arithmetic only)."""
        if not self.warmup or step is None:
            return self.decay
        s = max(0, int(step) - 1)
        if s <= 0:
            return 0.0
        return max(min(self.decay, 1.0 - (1.0 + s / self.warmup_gamma) ** -self.warmup_power), 0.0)

    @torch.no_grad()
    def update(self, step=None):
        """Average in the live model; ``step`` = optimizer steps taken so far (used with warmup)."""
        src = [t.detach() for t in self._avg_src]
        torch._foreach_lerp_(self._avg_dst, src, 1.0 - self.decay_at(step))
        if self._copy_dst:
            torch._foreach_copy_(self._copy_dst, [t.detach() for t in self._copy_src])

    @torch.no_grad()
    def sync_structure(self):
        """After a pruning event in the live model: copy its masks and refresh host-side state
        (condensation stages) of the EMA model by re-reading its own state dict."""
        if self._copy_dst:
            torch._foreach_copy_(self._copy_dst, [t.detach() for t in self._copy_src])
        self.module.load_state_dict(self.module.state_dict())

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)
