"""Export-time graphs of converted CondenseNet / CondenseNetV2 for ONNX runtimes (``runtime_graph``).

The converted model (``model.convert()``, official ``index``/``norm``/``conv`` keys) stays the checkpoint
and training reference; :func:`runtime_graph` builds a separate, inference-only copy whose *exported*
graph onnxruntime and OpenVINO run with fewer, fusable nodes. Per dense layer (Huang et al., CVPR 2018;
Yang et al., CVPR 2021; official ``layers.py`` / ``CondenseSFR``):

  * ``conv_2``'s BN follows the grouped 1x1 conv and its shuffle with no nonlinearity between, so it is
    folded into that conv (weight rows scaled through the shuffle permutation, plus a bias); the
    activation commutes with the shuffle and moves before it, so the runtimes fuse it into the conv as
    a post-op. Per layer: BN -> act -> Gather -> Conv(+bias+act) -> shuffle -> Conv 3x3 -> Concat.
  * The pre-activation BN runs on the layer's full input, before the gather (legal when every duplicated
    index has the same BN parameters, as ``convert()`` and the official converter produce them; otherwise
    the ``gather`` form keeps it after the gather): on the runtimes' blocked layouts it is a third of the
    cost of the same BN on the gathered copy.
  * ``lgc='dense'``: the gather is folded into the 1x1 weight instead: a dense 1x1 conv with zero columns
    outside each group's kept inputs writes its rows directly in shuffled order. No Gather, no shuffle
    node; ``G``x the 1x1 MACs.
  * ``lgc='auto'`` (default): ``dense`` where the 1x1 is narrow (<= 128 outputs: the extra MACs cost less
    than the Gather/shuffle nodes on large maps), ``gather`` where it is wide (the late blocks, where the
    ``G``x MACs dominate); ``auto`` is the fastest of the three on OpenVINO (benchmarks/README.md,
    ``python benchmarks/probes.py forms cdnv2_c``).
  * The SFR (v2) as ``sfr='dense'``: one 1x1 conv from the k new features onto all old channels
    (the grouped conv's rows summed per destination, zero rows for untouched channels), then ``x + r``
    (an Add the runtimes fuse into the conv); or ``sfr='scatter'``: the grouped conv and
    ``scatter_add`` (ScatterElements with reduction 'add', opset >= 16).
The forms are exact up to float rounding (tests/deploy/test_runtimes.py checks each against the converted model).
"""
import contextlib
import copy

import torch
import torch.nn as nn

from utils.errors import ConfigError

from .fused import bn_scale_shift, fused_activation

__all__ = ["runtime_graph", "RuntimeDenseBlock", "LGC_FORMS", "SFR_FORMS", "index_add_rounds",
           "legacy_onnx_overrides"]

LGC_FORMS = ("gather", "dense", "auto")
AUTO_DENSE_MAX_OUT = 128     # lgc="auto": dense 1x1 up to this many outputs, gather above
SFR_FORMS = ("dense", "scatter")


def index_add_rounds(x, index, y):
    """``x.index_add(1, index, y)`` as a few ``index_add`` calls whose indices are each duplicate-free.

    A converted SFR's ``index`` repeats a channel that two groups reactivate; the TorchScript-based ONNX
    exporter turns ``index_add`` into ScatterND without reduction, which keeps one of the duplicated
    addends. Round ``r`` adds the ``r``-th occurrence of every destination, so each round is exact in any
    exporter and opset. The rounds are built on the host from the (constant) index buffer."""
    rounds = []
    seen = {}
    for row, dest in enumerate(index.tolist()):
        k = seen.get(dest, 0)
        seen[dest] = k + 1
        if k == len(rounds):
            rounds.append(([], []))
        rounds[k][0].append(row)
        rounds[k][1].append(dest)
    for rows, dests in rounds:
        part = y if len(rows) == y.shape[1] else y.index_select(1, torch.tensor(rows, device=y.device))
        x = x.index_add(1, torch.tensor(dests, device=x.device), part)
    return x


def _index_add_symbolic(g, self, dim, index, other, alpha=None):
    """``self.index_add(dim, index, other)`` as ScatterElements(reduction='add'): duplicates are summed."""
    from torch.onnx import symbolic_helper as sh

    if alpha is not None and not sh._is_none(alpha):
        a = sh._maybe_get_const(alpha, "f")
        if not (isinstance(a, (int, float)) and a == 1):
            other = g.op("Mul", other, alpha)
    dim = sh._maybe_get_const(dim, "i")
    rank = sh._get_tensor_rank(other)
    if not isinstance(dim, int) or rank is None:
        return sh._unimplemented("index_add", "unknown dim or rank")
    dim = dim % rank
    shape = [1] * rank
    shape[dim] = -1
    idx = g.op("Reshape", index, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.long)))
    idx = g.op("Expand", idx, g.op("Shape", other))
    return g.op("ScatterElements", self, idx, other, axis_i=dim, reduction_s="add")


@contextlib.contextmanager
def legacy_onnx_overrides(opset):
    """Scoped symbolic overrides for the TorchScript-based ONNX exporter: while exporting, ``index_add``
    becomes ScatterElements(reduction='add') (opset >= 16), which sums duplicated destinations where the
    builtin symbolic's ScatterND keeps one addend; the builtin is back afterwards."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    if opset < 16:  # ScatterElements' reduction attribute appeared in opset 16
        yield
        return
    register_custom_op_symbolic("aten::index_add", _index_add_symbolic, opset)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::index_add", opset)


@torch.no_grad()
def _densified(conv):
    """A dense Conv2d equal to the grouped ``conv`` (zero weights outside each group's block)."""
    g, w = conv.groups, conv.weight
    out, per_in = w.shape[:2]
    dense = nn.Conv2d(per_in * g, out, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None).to(w)
    dense.weight.zero_()
    for i in range(g):
        rows = slice(i * out // g, (i + 1) * out // g)
        dense.weight[rows, i * per_in:(i + 1) * per_in] = w[rows]
    if conv.bias is not None:
        dense.bias.copy_(conv.bias)
    return dense


def _shuffled_rows(out, groups, device):
    """``r -> channel`` of ShuffleLayer(groups): row ``g*per + t`` lands at channel ``t*G + g``."""
    rows = torch.arange(out, device=device)
    per = out // groups
    return (rows % per) * groups + rows // per


class _RuntimeLayer(nn.Module):
    """One converted v1 / v2 dense layer; ``forward(x)`` returns the block features after the layer."""

    @torch.no_grad()
    def __init__(self, layer, lgc_form, sfr_form, conv3x3="grouped"):
        super().__init__()
        lgc, conv_2 = layer.conv_1, layer.conv_2
        g, out, c_in = lgc.groups, lgc.out_channels, lgc.in_channels
        w = lgc.conv.weight.detach()                                    # (out, width/G, 1, 1)
        shuffled = _shuffled_rows(out, g, w.device)
        scale2, shift2 = bn_scale_shift(conv_2.norm)
        w = w * scale2[shuffled].view(-1, 1, 1, 1)
        bias = shift2[shuffled]
        s1, b1 = bn_scale_shift(lgc.norm)
        index = lgc.index
        ds, db = torch.ones(c_in).to(s1), torch.zeros(c_in).to(b1)
        ds[index], db[index] = s1, b1
        # BN on the full input equals BN on the gathered copy iff duplicated inputs share BN parameters
        self.bn_first = bool(torch.equal(ds[index], s1) and torch.equal(db[index], b1))
        if lgc_form == "auto":
            lgc_form = "dense" if out <= AUTO_DENSE_MAX_OUT and self.bn_first else "gather"
        self.lgc_form, self.groups = lgc_form, g
        self.act_1 = fused_activation(lgc.act)
        self.act_2 = fused_activation(conv_2[1])
        if not self.bn_first and lgc_form == "dense":
            raise ConfigError("a converted learned group conv has different BN parameters for a duplicated "
                              "input channel; use runtime_graph(model, lgc='gather')")
        scale, shift = (ds, db) if self.bn_first else (s1, b1)
        self.register_buffer("scale_1", scale.view(1, -1, 1, 1).clone())
        self.register_buffer("shift_1", shift.view(1, -1, 1, 1).clone())
        if lgc_form == "gather":
            self.register_buffer("index", index.clone())
            self.conv_1 = nn.Conv2d(w.shape[1] * g, out, 1, groups=g, bias=True).to(w)
            self.conv_1.weight.copy_(w)
            self.conv_1.bias.copy_(bias)
        else:
            per_in = w.shape[1]
            dense = w.new_zeros(out, c_in)
            rows = torch.arange(out, device=w.device)
            cols = index.view(g, per_in)[rows // (out // g)]            # (out, per_in) source channels
            dense.scatter_add_(1, cols, w.view(out, per_in))
            self.conv_1 = nn.Conv2d(c_in, out, 1, bias=True).to(w)
            self.conv_1.weight.copy_(dense[shuffled.argsort()].view(out, c_in, 1, 1))   # rows in shuffled order
            self.conv_1.bias.copy_(bias[shuffled.argsort()])
        self.conv_2 = conv_2.conv if conv3x3 == "grouped" else _densified(conv_2.conv)
        self.se = layer.se if getattr(layer, "use_se", False) else None
        sfr = getattr(layer, "sfr", None)
        self.sfr_form = sfr_form if sfr is not None else None
        if sfr is not None:
            self.sfr_norm, self.sfr_act, self.sfr_groups = sfr.norm, fused_activation(sfr.act), sfr.groups
            if sfr_form == "scatter":
                self.sfr_conv = sfr.conv
                self.register_buffer("sfr_index", sfr.index.clone())
            else:
                k, gt = sfr.in_channels, sfr.groups
                ws = sfr.conv.weight.detach().view(-1, k // gt)                  # (rows, k/G_t)
                nrows = ws.shape[0]
                # grouped row r reads inverse-shuffled channels (r // (rows/G_t))*k/G_t + t = new channel
                # t*G_t + j (ShuffleLayerTrans); scatter each row onto its destination, duplicates summed
                j = torch.arange(nrows, device=ws.device) // (nrows // gt)
                cols = torch.arange(k // gt, device=ws.device).view(1, -1) * gt + j.view(-1, 1)
                full = ws.new_zeros(nrows, k).scatter_(1, cols, ws)
                dense = ws.new_zeros(sfr.out_channels, k).index_add_(0, sfr.index, full)
                self.sfr_conv = nn.Conv2d(k, sfr.out_channels, 1, bias=False).to(ws)
                self.sfr_conv.weight.copy_(dense.view(sfr.out_channels, k, 1, 1))

    def forward(self, x):
        if self.bn_first:
            z = self.act_1(x * self.scale_1 + self.shift_1)
            if self.lgc_form == "gather":
                z = z.index_select(1, self.index)
        else:
            z = self.act_1(x.index_select(1, self.index) * self.scale_1 + self.shift_1)
        y = self.act_2(self.conv_1(z))
        if self.lgc_form == "gather":
            n, c, h, w = y.shape
            y = y.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        new = self.conv_2(y)
        if self.se is not None:
            new = self.se(new)
        if self.sfr_form is None:
            return torch.cat([x, new], 1)
        s = self.sfr_act(self.sfr_norm(new))
        if self.sfr_form == "dense":
            x = x + self.sfr_conv(s)
        else:
            n, c, h, w = s.shape
            s = s.view(n, c // self.sfr_groups, self.sfr_groups, h, w).transpose(1, 2).reshape(n, c, h, w)
            r = self.sfr_conv(s)
            x = x.scatter_add(1, self.sfr_index.view(1, -1, 1, 1).expand_as(r), r)
        return torch.cat([x, new], 1)


class RuntimeDenseBlock(nn.Sequential):
    """A converted ``_DenseBlock`` / ``_SFRDenseBlock`` as a chain of :class:`_RuntimeLayer`."""

    def __init__(self, block, lgc="auto", sfr="dense", conv3x3="grouped"):
        super().__init__(*[_RuntimeLayer(layer, lgc, sfr, conv3x3) for layer in block.children()])

    def forward(self, x):
        if isinstance(x, (list, tuple)):
            x = torch.cat(x, 1)
        return super().forward(x)


@torch.no_grad()
def runtime_graph(model, lgc="auto", sfr="dense", conv3x3="grouped"):
    """An inference-only copy of a converted CondenseNet / CondenseNetV2 for export to ONNX / OpenVINO.

    ``model`` is not modified (its state dict keeps the official converted layout). ``lgc``: 'auto'
    (default, per layer by width), 'gather' (gather + grouped 1x1) or 'dense' (gather folded into a dense
    1x1); ``sfr``: 'dense' (default) or 'scatter' (see the module docstring). Hard swish becomes ``nn.Hardswish``
    (one ONNX HardSwish node). Returns the copy in eval mode with ``requires_grad`` off.
    """
    if lgc not in LGC_FORMS or sfr not in SFR_FORMS or conv3x3 not in ("grouped", "dense"):
        raise ConfigError(f"runtime_graph: lgc must be one of {LGC_FORMS} and sfr one of {SFR_FORMS}, "
                          f"got {lgc!r}, {sfr!r}")
    if not model.is_converted or model.is_fused:
        raise ConfigError("runtime_graph needs a converted, unfused CondenseNet / CondenseNetV2 "
                          "(model.convert())")
    new = copy.deepcopy(model).eval()
    for name, child in list(new.features.named_children()):
        if name.startswith("denseblock_"):
            setattr(new.features, name, RuntimeDenseBlock(child, lgc, sfr, conv3x3))
    new.requires_grad_(False)
    new.is_runtime_graph = True
    return new

