"""Inference-only fused forms of the converted CondenseNet / CondenseNetV2 dense blocks (``model.fuse()``).

What is fused (each change measured on a 2-thread CPU, see benchmarks/README.md):
  * ``conv_2``'s BN directly follows the converted LGC's grouped 1x1 conv and channel shuffle with no
    nonlinearity in between, so it is folded into that conv: the conv gets the BN scale on its weight rows
    (through the shuffle permutation) and a bias. One BN pass per layer less.
  * The activations run in place; hard swish is the single-kernel ``F.hardswish``.
  * A dense block writes into one preallocated buffer: v1 layers gather their inputs straight from the
    buffer (no growing ``torch.cat`` per layer) and copy their k new maps into its next slice; v2 layers
    also apply the SFR as an in-place ``index_add_`` into the buffer's old channels.
The fused modules hold copies of the converted weights; they are not trainable and have no official
state-dict layout (keep the converted model for checkpoints/export).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .lgc import channel_shuffle

__all__ = ["bn_scale_shift", "FusedDenseBlock", "fused_activation"]


def bn_scale_shift(bn):
    """(scale, shift) with ``bn(x) == x * scale + shift`` in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fused_activation(act):
    """An in-place single-kernel activation equivalent to ``act`` (ReLU or HS)."""
    if isinstance(act, nn.ReLU):
        return nn.ReLU(inplace=True)
    if isinstance(act, nn.Hardswish):
        return nn.Hardswish(inplace=True)
    return act


class _FusedLayer(nn.Module):
    """One converted dense layer (v1 or v2) in fused form; reads from / writes into a block buffer."""

    @torch.no_grad()
    def __init__(self, layer):
        super().__init__()
        lgc, conv_2 = layer.conv_1, layer.conv_2
        g = lgc.groups
        self.groups = g
        self.in_channels = lgc.in_channels
        self.register_buffer("index", lgc.index.clone())
        self.norm_1 = lgc.norm                                   # BN over the gathered inputs
        self.act_1 = fused_activation(lgc.act)
        # fold conv_2.norm (per shuffled channel) into the grouped 1x1 conv (per unshuffled row)
        w = lgc.conv.weight
        out = w.shape[0]
        per = out // g
        rows = torch.arange(out, device=w.device)
        shuffled = (rows % per) * g + rows // per                # row r lands at channel shuffled[r]
        scale, shift = bn_scale_shift(conv_2.norm)
        self.conv_1 = nn.Conv2d(w.shape[1] * g, out, 1, groups=g, bias=True).to(w)
        self.conv_1.weight.copy_(w * scale[shuffled].view(-1, 1, 1, 1))
        self.conv_1.bias.copy_(shift[shuffled])
        self.act_2 = fused_activation(conv_2[1])
        self.conv_2 = conv_2.conv
        self.growth = conv_2.conv.out_channels
        self.se = layer.se if getattr(layer, "use_se", False) else None
        sfr = getattr(layer, "sfr", None)
        self.has_sfr = sfr is not None
        if self.has_sfr:
            self.sfr_norm = sfr.norm
            self.sfr_act = fused_activation(sfr.act)
            self.sfr_groups = sfr.groups
            self.sfr_conv = sfr.conv
            self.register_buffer("sfr_index", sfr.index.clone())

    def new_features(self, buf):
        """The k new maps from the block buffer (only the gathered channels are read)."""
        z = self.act_1(self.norm_1(buf.index_select(1, self.index)))
        y = channel_shuffle(self.act_2(self.conv_1(z)), self.groups)
        new = self.conv_2(y)
        if self.se is not None:
            new = self.se(new)
        return new

    def reactivation(self, new):
        s = channel_shuffle(self.sfr_act(self.sfr_norm(new)), self.sfr_groups, inverse=True)
        return self.sfr_conv(s)


class FusedDenseBlock(nn.Module):
    """A converted ``_DenseBlock`` / ``_SFRDenseBlock`` running in one preallocated channel buffer."""

    def __init__(self, block):
        super().__init__()
        self.layers = nn.ModuleList(_FusedLayer(layer) for layer in block.children())
        self.out_channels = self.layers[-1].in_channels + self.layers[-1].growth

    def forward(self, x):
        if isinstance(x, (list, tuple)):
            x = torch.cat(x, 1)
        n, c0, h, w = x.shape
        fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else torch.contiguous_format
        buf = torch.empty((n, self.out_channels, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
        buf[:, :c0].copy_(x)
        c = c0
        for layer in self.layers:
            new = layer.new_features(buf)
            if layer.has_sfr:
                buf[:, :c].index_add_(1, layer.sfr_index, layer.reactivation(new))
            k = new.shape[1]
            buf[:, c:c + k].copy_(new)
            c += k
        return buf
