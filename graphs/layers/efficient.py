"""Memory-efficient pre-activation convolution: ``conv(act(BN(cat(features))))`` that stores only its inputs.

A dense layer's BN-activation output (and the concatenation feeding it) is as wide as the layer's whole
input, so storing it for the backward pass makes the activation memory of a dense block grow
quadratically with depth (Pleiss et al., "Memory-Efficient Implementation of DenseNets", 2017).
:class:`BNActConv` keeps only references to the input feature maps (which the network holds anyway),
the conv weight and the per-channel batch statistics; the backward pass recomputes the cheap
concatenation, normalisation and activation from them (one elementwise pass) and then runs the conv and
BN backward kernels. The convolution itself is *not* recomputed.

Numerics: the forward pass is the same kernel sequence as the plain module (``native_batch_norm`` in
training mode, activation, optional channel gather, ``conv2d``), so outputs and BN running statistics are
identical (the statistics are updated exactly once, in the forward pass; the recompute uses the saved
batch mean / inverse std). Gradients agree with autograd's to float rounding.

Mixed precision: under ``torch.autocast`` the forward's ``conv2d`` runs in the autocast dtype (bf16/fp16)
while BN and the activation keep the input's dtype, as in the plain module. The backward runs outside
autocast, so it redoes those casts by hand: the recomputed BN output is rounded to the input's dtype (as
``native_batch_norm`` rounds it), the conv backward gets its input and weight in the dtype the forward
conv used (``convolution_backward`` is not an autocast op, and mixed dtypes make oneDNN fail with "could
not create a primitive descriptor"), and each gradient is returned in its input's dtype (fp32 for the
weight, as autocast's cast would give it).

Used by :class:`~graphs.layers.lgc.LearnedGroupConv`, :class:`~graphs.layers.sfr.SFR` and
:class:`~graphs.layers.conv.Conv` when ``memory_efficient`` is set, in training mode with grad enabled.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BNActConv", "bn_act_conv", "act_kind", "can_use", "set_memory_efficient"]


def act_kind(module):
    """'relu' | 'hs' | None (unsupported activation: use the plain path)."""
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Hardswish):     # CondenseNetV2's HS is one
        return "hs"
    return None


def _act_(y, kind):
    if kind == "relu":
        return y.relu_()
    return F.hardswish(y)                      # as HS.forward


def _act_backward(grad, y, z, kind):
    """Gradient through the activation with the native kernels (a masked_fill_ is far slower)."""
    if kind == "relu":
        return torch.ops.aten.threshold_backward(grad, z, 0)   # z = relu(y) > 0 exactly where y > 0
    return torch.ops.aten.hardswish_backward(grad, y)


class BNActConv(torch.autograd.Function):
    """``conv2d(act(batch_norm(cat(feats))).index_select(index), weight)`` with recompute in backward.

    forward(ctx, meta, weight, gamma, beta, running_mean, running_var, *feats); ``meta`` =
    (eps, momentum, kind, index or None, stride, padding, dilation, groups). Training mode only.
    """

    @staticmethod
    def forward(ctx, meta, weight, gamma, beta, running_mean, running_var, *feats):
        eps, momentum, kind, index, stride, padding, dilation, groups = meta
        x = feats[0] if len(feats) == 1 else torch.cat(feats, 1)
        y, save_mean, save_invstd = torch.native_batch_norm(x, gamma, beta, running_mean, running_var,
                                                            True, momentum, eps)
        z = _act_(y, kind)
        if index is not None:
            z = z.index_select(1, index)
        out = F.conv2d(z, weight, None, stride, padding, dilation, groups)
        ctx.meta = meta
        ctx.conv_dtype = out.dtype       # the autocast dtype when autocast is on, else the common dtype
        ctx.widths = [f.shape[1] for f in feats]
        ctx.save_for_backward(weight, gamma, beta, save_mean, save_invstd, *feats)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        eps, momentum, kind, index, stride, padding, dilation, groups = ctx.meta
        weight, gamma, beta, mean, invstd, *feats = ctx.saved_tensors
        x = feats[0] if len(feats) == 1 else torch.cat(feats, 1)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = invstd if gamma is None else gamma * invstd
        shift = -mean * scale if beta is None else beta - mean * scale
        # fp32 scale/shift promote a bf16/fp16 x: round back to x's dtype, as the forward BN output was
        y = torch.addcmul(shift.view(shape), x, scale.view(shape)).to(x.dtype)
        z = _act_(y, kind)
        if kind == "relu":
            y = None                     # relu ran in place: z is y's storage, its mask is all we need
        zin = z.index_select(1, index) if index is not None else z
        cdt = ctx.conv_dtype
        need_w = ctx.needs_input_grad[1]
        grad_z, grad_w, _ = torch.ops.aten.convolution_backward(
            grad_out.to(cdt), zin.to(cdt), weight.to(cdt), None, list(stride), list(padding), list(dilation),
            False, [0, 0], groups, [True, need_w, False])
        del zin
        grad_z = grad_z.to(z.dtype)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if index is not None:
            grad_z = torch.zeros_like(z).index_add_(1, index, grad_z)
        grad_y = _act_backward(grad_z, y, z, kind)
        del y, z, grad_z
        needs_bn = (ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        grad_x, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            grad_y, x, gamma, None, None, mean, invstd, True, eps,
            [any(ctx.needs_input_grad[6:]), needs_bn[0] and gamma is not None, needs_bn[1] and beta is not None])
        grads = [None] * len(feats)
        if grad_x is not None:
            grads = list(grad_x.split(ctx.widths, 1)) if len(feats) > 1 else [grad_x]
            grads = [g.to(f.dtype) for g, f in zip(grads, feats)]   # cat() promoted mixed-dtype inputs
        return (None, grad_w if need_w else None, grad_gamma if needs_bn[0] else None,
                grad_beta if needs_bn[1] else None, None, None, *grads)


def bn_act_conv(feats, norm, act, weight, stride=1, padding=0, dilation=1, groups=1, index=None):
    """Memory-efficient ``conv(act(norm(cat(feats))))`` (training mode); ``feats``: tensor or list.

    ``norm`` is the layer's ``nn.BatchNorm2d`` (its running statistics and ``num_batches_tracked`` are
    updated once, like the module would), ``act`` its activation module (ReLU or HS).
    """
    if torch.is_tensor(feats):
        feats = [feats]
    kind = act_kind(act)
    if norm.momentum is None:
        norm.num_batches_tracked.add_(1)
        momentum = 1.0 / float(norm.num_batches_tracked)    # host value only in this rare mode
    else:
        if norm.num_batches_tracked is not None:
            norm.num_batches_tracked.add_(1)
        momentum = norm.momentum
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    meta = (norm.eps, momentum, kind, index, pair(stride), pair(padding), pair(dilation), groups)
    return BNActConv.apply(meta, weight, norm.weight, norm.bias, norm.running_mean, norm.running_var, *feats)


def can_use(module, norm, act):
    """True when the memory-efficient path applies (flag set, training, grad on, plain BN)."""
    return (getattr(module, "memory_efficient", False) and module.training and torch.is_grad_enabled()
            and type(norm) is nn.BatchNorm2d and norm.track_running_stats and act_kind(act) is not None)


def set_memory_efficient(model, enabled=True):
    """Set ``memory_efficient`` on every submodule that supports it (LGC, SFR, ``Conv``)."""
    for m in model.modules():
        if hasattr(type(m), "memory_efficient"):
            m.memory_efficient = bool(enabled)
    return model
