"""Learned Group Convolution (CondenseNet, Huang et al., CVPR 2018) and its converted form.

Training-time form (:class:`LearnedGroupConv`): BN -> activation -> (dropout) -> dense 1x1 conv whose
weight is multiplied by a 0/1 ``_mask`` buffer. Output channel ``o`` belongs to group ``o % G``. During
the first half of training the mask is pruned in ``C - 1`` events (C = condense factor) until every
group sees ``in / C`` inputs. The buffers ``_mask``, ``_count`` and ``_stage`` live in the state dict
exactly like the official ones, so official checkpoints load.

Differences from the official code (deliberate):
  * the stage is mirrored on the host (``self.stage``), so forward never reads a device buffer; the
    agent calls ``advance``/``set_progress`` before a step and a loaded state dict refreshes the mirror;
  * a jump over several stages applies *all* pending pruning events (official: only one);
  * once the mask is final the layer runs a grouped 1x1 conv on the kept inputs, with the weight
    gathered from the dense parameter (``condensed_forward``), numerically the same as the masked conv.

Converted form (:class:`CondensedLGC`): index_select -> BN -> activation -> grouped conv -> shuffle,
with the official ``index`` / ``norm`` / ``conv`` keys.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import ConfigError, check

from .activation import make_activation
from .efficient import bn_act_conv, can_use


def stage_for_progress(progress, condense_factor):
    """Official schedule: the first i in 0..C-2 with 2p < (i+1)/(C-1), else C-1."""
    c = int(condense_factor)
    for i in range(c - 1):
        if 2.0 * progress < (i + 1) / (c - 1):
            return i
    return c - 1


def channel_shuffle(x: torch.Tensor, groups: int, inverse: bool = False) -> torch.Tensor:
    """ShuffleNet channel shuffle: channel ``g*(C/G) + t`` moves to ``t*G + g``; ``inverse`` undoes it
    (channels ``g, g+G, g+2G, ...`` become the contiguous block ``g``)."""
    n, c, h, w = x.shape
    split = (c // groups, groups) if inverse else (groups, c // groups)
    return x.view(n, *split, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleLayer(nn.Module):
    """:func:`channel_shuffle` as a module (the official converted models' ``ShuffleLayer``)."""

    inverse = False

    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        return channel_shuffle(x, self.groups, self.inverse)


class ShuffleLayerTrans(ShuffleLayer):
    """The inverse shuffle (official ``ShuffleLayerTrans``, used by the converted SFR)."""

    inverse = True


class PreActLayer(nn.Module):
    """What every learned / condensed 1x1 layer of the CondenseNets has: its widths, group count and
    condense factor, a BN and an activation child named as in the official checkpoints."""

    def _setup(self, in_channels, out_channels, groups, condense_factor, act_name):
        self.in_channels, self.out_channels = in_channels, out_channels
        self.groups, self.condense_factor, self.act_name = groups, condense_factor, act_name

    def _add_norm_act(self, width, activation, bn_momentum, dropout_rate=0.0):
        """``norm``, the activation (then ``drop`` when ``dropout_rate`` > 0), in the official order."""
        self.dropout_rate = dropout_rate
        self.norm = nn.BatchNorm2d(width, momentum=bn_momentum)
        self.add_module(self.act_name, make_activation(activation))
        if dropout_rate > 0:
            self.drop = nn.Dropout(dropout_rate)

    @property
    def act(self):
        return self._modules[self.act_name]


class _MaskedWeight(torch.autograd.Function):
    """``weight * mask`` whose result and gradient have ``weight``'s strides.

    An elementwise op gives a 1x1 kernel (size-1 spatial dims) the standard strides on those dims
    whatever its operands' layout, so the gradient autograd accumulated into a channels_last 1x1
    weight differed from the weight in those strides: the same memory, but DDP compares strides with
    its bucket views and warned "grad strides do not match bucket view strides" on every rank."""

    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(mask)
        ctx.stride = weight.stride()
        return torch.mul(weight, mask, out=torch.empty_like(weight))

    @staticmethod
    def backward(ctx, grad):
        mask, = ctx.saved_tensors
        out = torch.empty_strided(grad.shape, ctx.stride, dtype=grad.dtype, device=grad.device)
        return torch.mul(grad, mask, out=out), None


class CondensingModule(PreActLayer):
    """Shared machinery of LGC and SFR: official buffers, host-side stage mirror, pruning schedule."""

    memory_efficient = False    # recompute BN-activation in backward (see graphs.layers.efficient)

    def _init_condensing(self, weight_shape):
        # registration order = official state-dict order: _count, _stage, _mask
        self.register_buffer("_count", torch.zeros(1))
        self.register_buffer("_stage", torch.zeros(1))
        self.register_buffer("_mask", torch.ones(weight_shape))
        self.stage = 0      # host mirror of _stage
        self.count = 0      # host mirror of _count

    @property
    def mask(self):
        return self._mask

    @property
    def final_stage(self):
        return self.condense_factor - 1

    @property
    def is_final(self):
        return self.stage >= self.final_stage

    def set_progress(self, progress):
        """Apply the schedule for training progress ``progress`` (0..1); returns the number of events."""
        return self.advance(stage_for_progress(progress, self.condense_factor))

    def advance(self, target_stage):
        """Apply every pruning event up to ``target_stage`` (host-side decision); returns how many."""
        target = min(int(target_stage), self.final_stage)
        events = 0
        with torch.no_grad():
            while self.stage < target:
                self._prune(self.count, self.delta)
                self.count += self.delta
                self.stage += 1
                events += 1
            if events:
                self._stage.fill_(float(self.stage))
                self._count.fill_(float(self.count))
        if events:
            self._on_stage_change()
        return events

    def sync_from_buffers(self):
        """Refresh the host mirror from ``_stage``/``_count`` (after copying buffers by hand, e.g. EMA)."""
        self.stage = int(round(float(self._stage.item())))
        self.count = int(round(float(self._count.item())))
        self._on_stage_change()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        self.sync_from_buffers()

    def masked_weight(self):
        """The conv weight times the mask; in training laid out (and its gradient) as the weight. Evaluation
        and export take the plain product: ONNX's tracer cannot export the autograd function."""
        if self.training and torch.is_grad_enabled():
            return _MaskedWeight.apply(self.conv.weight, self._mask)
        return self.conv.weight * self._mask

    def _on_stage_change(self):
        pass

    def _prune(self, count, delta):
        raise NotImplementedError


class LearnedGroupConv(CondensingModule):
    """BN -> activation -> optional dropout -> 1x1 conv with a learned group-sparse mask.

    Args:
        in_channels, out_channels: widths (1x1 conv only).
        groups: G, output channel ``o`` belongs to group ``o % G``.
        condense_factor: C (default G); every event prunes ``in // C`` inputs per group.
        dropout_rate: dropout before the conv (child ``drop``, only when > 0).
        activation: ``'ReLU'`` or ``'HS'``; act_name: child name (``'relu'`` v1, ``'activation'`` v2).
    """

    def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1,
                 groups=1, condense_factor=None, dropout_rate=0.0, activation="ReLU", act_name="relu",
                 bn_momentum=0.1):
        super().__init__()
        condense_factor = groups if condense_factor is None else condense_factor
        check(kernel_size == 1, f"LearnedGroupConv supports only 1x1 kernels, got {kernel_size}")
        check(groups >= 1 and condense_factor >= 1,
              f"groups ({groups}) and condense_factor ({condense_factor}) must be positive integers")
        check(in_channels % groups == 0,
              f"layer input width {in_channels} is not divisible by groups {groups}; "
              f"choose widths (stem = 2*growth[0], growth) that are multiples of {groups}")
        check(in_channels % condense_factor == 0,
              f"layer input width {in_channels} is not divisible by condense_factor {condense_factor}; "
              f"choose widths (stem = 2*growth[0], growth) that are multiples of {condense_factor} "
              f"or a smaller condense_factor")
        check(out_channels % groups == 0,
              f"learned group conv output width {out_channels} is not divisible by groups {groups}; "
              f"choose bottleneck*growth as a multiple of {groups}")
        self._setup(in_channels, out_channels, groups, condense_factor, act_name)
        self.stride = stride
        self.delta = in_channels // condense_factor
        self.condensed_forward = True
        self._init_condensing((out_channels, in_channels, 1, 1))
        self._add_norm_act(in_channels, activation, bn_momentum, dropout_rate)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, stride=stride, padding=padding,
                              dilation=dilation, groups=1, bias=False)
        # kept inputs per group (group-major, ascending), valid only once the mask is final
        # (a plain attribute, not a buffer: EMA/buffer walkers must not see it; moved lazily)
        self._keep_index = torch.zeros(0, dtype=torch.long)
        self._condensed_ready = False

    # ---- condensation -------------------------------------------------------------------------
    def _prune(self, count, delta):
        g, out, inp = self.groups, self.out_channels, self.in_channels
        score = (self.conv.weight * self._mask).abs().view(out // g, g, inp).sum(0)   # (G, in)
        order = score.argsort(dim=1, stable=True)
        drop = order[:, count:count + delta]
        keep = torch.ones_like(score).scatter_(1, drop, 0.0)
        self._mask.view(out // g, g, inp).mul_(keep.unsqueeze(0))

    def _on_stage_change(self):
        self._condensed_ready = False
        if self.stage < self.final_stage:
            return
        g, n = self.groups, self.in_channels // self.condense_factor
        mask = self._mask.detach().view(self.out_channels, self.in_channels)
        rows = mask[:g]
        grouped = mask.view(self.out_channels // g, g, self.in_channels)
        if not (bool((rows.sum(1) == n).all()) and bool((grouped == rows.unsqueeze(0)).all())):
            return      # not an official final mask: keep the masked dense forward
        order = torch.sort(rows, dim=1, descending=True, stable=True)[1]
        self._keep_index = order[:, :n].sort(dim=1)[0].reshape(-1).contiguous()
        self._condensed_ready = True

    def kept_inputs(self):
        """(G, in/C) kept input indices per group, ascending (mask must be final)."""
        check(self.stage >= self.final_stage,
              f"this learned group conv is at condensation stage {self.stage} of {self.final_stage}; "
              f"finish condensation (progress >= 0.5) before converting")
        g, n = self.groups, self.in_channels // self.condense_factor
        mask = self._mask.detach().view(self.out_channels, self.in_channels)
        idx = []
        for i in range(g):
            nz = torch.nonzero(mask[i] > 0).flatten()[:n]
            check(nz.numel() == n, f"group {i} keeps {nz.numel()} inputs instead of {n}; "
                                   f"the mask is not a finished condensation mask")
            idx.append(nz)
        return torch.stack(idx)

    def gathered_weight(self, keep=None):
        """Grouped weight (out, in/C, 1, 1): row i*out/G + k, column t <- weight[i + k*G, keep[i, t]]."""
        g, out = self.groups, self.out_channels
        keep = self._keep_index.view(g, -1) if keep is None else keep
        n = keep.shape[1]
        w = self.conv.weight.view(out // g, g, self.in_channels).transpose(0, 1)    # (G, out/G, in)
        w = w.gather(2, keep.unsqueeze(1).expand(g, out // g, n))
        return w.reshape(out, n, 1, 1)

    def lasso_term(self):
        """Official group lasso (active while stage < G - 1), else a zero scalar."""
        if self.stage >= self.groups - 1:
            return self.conv.weight.new_zeros(())
        g = self.groups
        w = self.masked_weight().view(self.out_channels // g, g, self.in_channels)
        return w.pow(2).sum(0).clamp(min=1e-6).sqrt().sum()

    # ---- forward ----------------------------------------------------------------------------------
    def forward(self, x):
        # Condensed form (gather + grouped conv) only on NCHW inputs: on channels_last tensors the channel
        # gather / its index_add backward are strided and measured far slower than the masked dense GEMM.
        first = x[0] if isinstance(x, (list, tuple)) else x
        condensed = self.condensed_forward and self._condensed_ready and not (
            first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last))
        if condensed and self._keep_index.device != self._mask.device:
            self._keep_index = self._keep_index.to(self._mask.device)
        if self.dropout_rate == 0 and can_use(self, self.norm, self.act):
            conv = self.conv
            if condensed:
                y = bn_act_conv(x, self.norm, self.act, self.gathered_weight(), conv.stride, conv.padding,
                                conv.dilation, self.groups, self._keep_index)
                return channel_shuffle(y, self.groups)
            return bn_act_conv(x, self.norm, self.act, self.masked_weight(), conv.stride, conv.padding,
                               conv.dilation, 1)
        if isinstance(x, (list, tuple)):
            x = torch.cat(x, 1)
        x = self.act(self.norm(x))
        if self.dropout_rate > 0:
            x = self.drop(x)
        if condensed:
            x = x.index_select(1, self._keep_index)
            y = F.conv2d(x, self.gathered_weight(), stride=self.conv.stride,
                         padding=self.conv.padding, groups=self.groups)
            return channel_shuffle(y, self.groups)
        return F.conv2d(x, self.masked_weight(), stride=self.conv.stride,
                        padding=self.conv.padding, dilation=self.conv.dilation)

    def extra_repr(self):
        return (f"groups={self.groups}, condense_factor={self.condense_factor}, stage={self.stage}, "
                f"condensed_forward={self.condensed_forward and self._condensed_ready}")


class CondensedLGC(PreActLayer):
    """Converted LGC: index_select(in*G/C kept inputs) -> BN -> activation -> grouped 1x1 -> shuffle."""

    def __init__(self, in_channels, out_channels, groups, condense_factor=None, activation="ReLU",
                 act_name="relu", stride=1, bn_momentum=0.1):
        super().__init__()
        condense_factor = groups if condense_factor is None else condense_factor
        check(in_channels % condense_factor == 0 and out_channels % groups == 0,
              f"converted learned group conv {in_channels}->{out_channels} does not fit groups {groups} "
              f"and condense_factor {condense_factor}; use widths divisible by both")
        self._setup(in_channels, out_channels, groups, condense_factor, act_name)
        width = in_channels * groups // condense_factor
        self.register_buffer("index", torch.zeros(width, dtype=torch.long))
        self._add_norm_act(width, activation, bn_momentum)
        self.conv = nn.Conv2d(width, out_channels, 1, stride=stride, groups=groups, bias=False)
        self.shuffle = ShuffleLayer(groups)

    @torch.no_grad()
    def load_from_lgc(self, lgc):
        """Map a fully condensed :class:`LearnedGroupConv` into this module (official scan order)."""
        if (lgc.in_channels, lgc.out_channels, lgc.groups, lgc.condense_factor) != \
                (self.in_channels, self.out_channels, self.groups, self.condense_factor):
            raise ConfigError("converted layer shape does not match the learned group conv")
        keep = lgc.kept_inputs()                          # (G, in/C)
        index = keep.reshape(-1)
        self.index.copy_(index)
        src, dst = lgc.norm, self.norm
        dst.weight.copy_(src.weight[index])
        dst.bias.copy_(src.bias[index])
        dst.running_mean.copy_(src.running_mean[index])
        dst.running_var.copy_(src.running_var[index])
        self.conv.weight.copy_(lgc.gathered_weight(keep))
        return self

    def forward(self, x):
        if isinstance(x, (list, tuple)):
            x = torch.cat(x, 1)
        x = x.index_select(1, self.index)
        return self.shuffle(self.conv(self.act(self.norm(x))))
