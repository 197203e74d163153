"""Sparse Feature Reactivation (CondenseNetV2, Yang et al., CVPR 2021) and its converted form.

:class:`SFR` is a learned-sparse 1x1 conv from a dense layer's ``k`` new channels back onto its
``C_in`` input channels: BN(k) -> activation -> (dropout) -> dense conv k -> C_in masked by ``_mask``.
Groups are over the *input* side: new channel ``j`` belongs to group ``j % G_t``. Each of the
``C_t - 1`` pruning events removes ``C_in // C_t`` output rows per group (criterion over the group's
columns). The dense layer adds the result to its input: ``x + sfr(new)``.

:class:`CondensedSFR` is the deployable form: BN -> activation -> inverse shuffle -> grouped conv with
``C_in*G_t/C_t`` outputs, added into ``x`` at the int64 ``index`` destinations with ``index_add``
(duplicates accumulate). It also loads the official float C x C 0/1 ``index`` matrix.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import CheckpointError, ConfigError, check

from .efficient import bn_act_conv, can_use
from .lgc import CondensingModule, PreActLayer, ShuffleLayerTrans
from .runtime import index_add_rounds


class SFR(CondensingModule):
    """Training-time sparse feature reactivation (``in_channels`` = k new, ``out_channels`` = C_in)."""

    def __init__(self, in_channels, out_channels, groups=1, condense_factor=None, dropout_rate=0.0,
                 activation="ReLU", act_name="activation", bn_momentum=0.1):
        super().__init__()
        condense_factor = groups if condense_factor is None else condense_factor
        check(groups >= 1 and condense_factor >= 1,
              f"group_trans ({groups}) and trans_factor ({condense_factor}) must be positive integers")
        check(in_channels % groups == 0,
              f"SFR input width {in_channels} (the growth rate) is not divisible by group_trans {groups}; "
              f"choose a growth rate that is a multiple of {groups}")
        check(out_channels % condense_factor == 0,
              f"layer input width {out_channels} is not divisible by trans_factor {condense_factor}; "
              f"choose widths that are multiples of {condense_factor} or a smaller trans_factor")
        check(out_channels % groups == 0,
              f"layer input width {out_channels} is not divisible by group_trans {groups}; "
              f"choose widths that are multiples of {groups}")
        self._setup(in_channels, out_channels, groups, condense_factor, act_name)
        self.delta = out_channels // condense_factor
        self._init_condensing((out_channels, in_channels, 1, 1))
        self._add_norm_act(in_channels, activation, bn_momentum, dropout_rate)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        # The official constructor sets the BN gamma to 0, but the model-level init then sets every
        # BN gamma to 1; the released weights were trained from gamma = 1, so we keep PyTorch's 1.

    def _prune(self, count, delta):
        g, out, k = self.groups, self.out_channels, self.in_channels
        score = (self.conv.weight * self._mask).abs().view(out, k // g, g).sum(1).t()   # (G, out)
        order = score.argsort(dim=1, stable=True)
        drop = order[:, count:count + delta]
        keep = torch.ones_like(score).scatter_(1, drop, 0.0)                              # keep[g, o]
        self._mask.view(out, k // g, g).mul_(keep.t().unsqueeze(1))

    def kept_outputs(self):
        """(G_t, C_in/C_t) kept destination rows per group, ascending (mask must be final)."""
        check(self.stage >= self.final_stage,
              f"this SFR is at condensation stage {self.stage} of {self.final_stage}; "
              f"finish condensation (progress >= 0.5) before converting")
        n = self.out_channels // self.condense_factor
        mask = self._mask.detach().view(self.out_channels, self.in_channels)
        rows = []
        for j in range(self.groups):
            nz = torch.nonzero(mask[:, j] > 0).flatten()[:n]
            check(nz.numel() == n, f"SFR group {j} keeps {nz.numel()} outputs instead of {n}; "
                                   f"the mask is not a finished condensation mask")
            rows.append(nz)
        return torch.stack(rows)

    def lasso_term(self):
        """Group lasso over (output row, input group) (active while stage < G_t - 1); unused officially."""
        if self.stage >= self.groups - 1:
            return self.conv.weight.new_zeros(())
        g = self.groups
        w = self.masked_weight().view(self.out_channels, self.in_channels // g, g)
        return w.pow(2).sum(1).clamp(min=1e-6).sqrt().sum()

    def forward(self, x_new, x_old=None):
        """``r`` (C_in channels) from the new features, or ``x_old + r`` when ``x_old`` is given."""
        if self.dropout_rate == 0 and can_use(self, self.norm, self.act):
            r = bn_act_conv(x_new, self.norm, self.act, self.masked_weight())
            return r if x_old is None else x_old + r
        y = self.act(self.norm(x_new))
        if self.dropout_rate > 0:
            y = self.drop(y)
        r = F.conv2d(y, self.masked_weight())
        return r if x_old is None else x_old + r

    def extra_repr(self):
        return f"groups={self.groups}, condense_factor={self.condense_factor}, stage={self.stage}"


class CondensedSFR(PreActLayer):
    """Converted SFR: BN -> activation -> inverse shuffle -> grouped conv -> index_add into ``x``."""

    def __init__(self, in_channels, out_channels, groups, condense_factor=None, activation="ReLU",
                 act_name="activation", bn_momentum=0.1):
        super().__init__()
        condense_factor = groups if condense_factor is None else condense_factor
        check(in_channels % groups == 0 and out_channels % condense_factor == 0,
              f"converted SFR {in_channels}->{out_channels} does not fit group_trans {groups} and "
              f"trans_factor {condense_factor}; use widths divisible by both")
        self._setup(in_channels, out_channels, groups, condense_factor, act_name)
        width = out_channels * groups // condense_factor
        self.register_buffer("index", torch.zeros(width, dtype=torch.long))
        self._add_norm_act(in_channels, activation, bn_momentum)
        self.shuffle = ShuffleLayerTrans(groups)
        self.conv = nn.Conv2d(in_channels, width, 1, groups=groups, bias=False)

    # ---- official C x C float index matrix ----------------------------------------------------------
    def accepts_state_shape(self, name, tensor):
        return (name == "index" and torch.is_tensor(tensor) and tensor.dim() == 2
                and tensor.is_floating_point() and tensor.shape[0] == tensor.shape[1] == self.index.numel())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "index"
        t = state_dict.get(key)
        if torch.is_tensor(t) and t.dim() == 2 and self.accepts_state_shape("index", t):
            ones = t != 0
            if not (bool((ones.sum(1) == 1).all()) and bool((t[ones] == 1).all())):
                raise CheckpointError(f"{key} is not a 0/1 matrix with exactly one 1 per row; "
                                      f"the file is not an official converted CondenseNetV2 checkpoint")
            dest = t.argmax(1).long()
            if int(dest.max()) >= self.out_channels:
                raise CheckpointError(f"{key} maps to channel {int(dest.max())} but the layer has "
                                      f"{self.out_channels}; the file belongs to another model")
            state_dict[key] = dest
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def index_matrix(self):
        """The official float (width x width) 0/1 matrix (only square when G_t == C_t)."""
        m = torch.zeros(self.index.numel(), self.out_channels, device=self.index.device)
        m[torch.arange(self.index.numel(), device=self.index.device), self.index] = 1.0
        return m

    @torch.no_grad()
    def load_from_sfr(self, sfr):
        """Map a fully condensed :class:`SFR` into this module (official scan order)."""
        if (sfr.in_channels, sfr.out_channels, sfr.groups, sfr.condense_factor) != \
                (self.in_channels, self.out_channels, self.groups, self.condense_factor):
            raise ConfigError("converted SFR shape does not match the SFR")
        rows = sfr.kept_outputs()                                  # (G, n)
        g, k, n = self.groups, self.in_channels, rows.shape[1]
        self.index.copy_(rows.reshape(-1))
        self.norm.load_state_dict(sfr.norm.state_dict())
        w = sfr.conv.weight.view(self.out_channels, k // g, g).permute(2, 0, 1)   # (G, out, k/G)
        w = w.gather(1, rows.unsqueeze(2).expand(g, n, k // g))                   # (G, n, k/G)
        self.conv.weight.copy_(w.reshape(g * n, k // g, 1, 1))
        return self

    def forward(self, x_new, x_old=None):
        y = self.conv(self.shuffle(self.act(self.norm(x_new))))
        if x_old is None:
            n, _, h, w = y.shape
            x_old = y.new_zeros(n, self.out_channels, h, w)
        if torch.jit.is_tracing():      # legacy ONNX export / TorchScript trace: no duplicate-index index_add
            return index_add_rounds(x_old, self.index, y)
        return x_old.index_add(1, self.index, y)
