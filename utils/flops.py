"""FLOPs and parameter counting with the papers' own rules.

``profile(model)`` runs one forward pass of a zero image through the model (eval mode, no grad)
with forward hooks and returns ``(flops, params)`` per image, counted with one of three rules:

``'v1'``  CondenseNet (ShichenLiu/CondenseNet ``utils.measure_model``):
          Conv: MACs ``in*out*kh*kw*Hout*Wout/groups`` (no bias term); ReLU: one op per element;
          AvgPool2d: ``C*Hout*Wout*k^2``; AdaptiveAvgPool2d: ``C*H*W`` of its input;
          Linear: weight numel + bias numel; BatchNorm/Dropout: 0 ops.
          Params: every parameter of every *counted* module.
``'v2'``  CondenseNetV2 (``utils/tools.measure_model``): as v1, but Linear counts the weight numel
          only (no bias adds), ReLU6 and hard-swish one op per element (the reference charges HS
          through its ``relu6`` child), Sigmoid two ops per element, MaxPool2d/Identity 0.
``'macs'`` ReXNet/timm style: multiply-accumulates of Conv and Linear layers only; params are all
          learnable parameters of the model.

A module that defines ``count_ops(inputs, output) -> (ops, params)`` (the masked learned group
convolution and SFR layers) is counted by that method and its children are not visited
('v1'/'v2'); that is how an unconverted CondenseNet is charged its final condensed cost
(MACs / C, weight / C). Converted models are counted by recursing into their BN, ReLU, conv and
Linear children; ``index_select``, channel shuffles, ``torch.cat`` and other functional ops
(including the converted SFR's index matmul and the partial ReXNet shortcut) are not counted.

Under 'macs' ``count_ops`` is ignored: the counter recurses and charges every conv's dense MACs,
which is what the module costs as it runs.

The pass uses a batch of one image; every count is per image (the v2 reference uses a batch of
two and divides by it, which gives the same numbers in eval mode). ``count_ops`` therefore sees
batch-1 tensors; they are usually meta tensors (shapes only, no values), because the pass runs on
a meta-device copy of the model, falling back to a real pass when the forward needs values.
"""
import copy
import math
import os

import torch
import torch.nn as nn

RULES = ("v1", "v2", "macs")

# Published FLOPs / params per registry name, as printed in the papers/READMEs (for display in
# flops_table).  The CIFAR CondenseNet rows are CIFAR-10 numbers of the unconverted model; the
# ImageNet CondenseNet rows are of the converted model.
PUBLISHED = {
    "condensenet_50": ("28.6M", "0.22M"),
    "condensenet_74": ("51.9M", "0.41M"),
    "condensenet_86": ("65.8M", "0.52M"),
    "condensenet_98": ("81.3M", "0.65M"),
    "condensenet_110": ("98.2M", "0.79M"),
    "condensenet_122": ("116.7M", "0.95M"),
    "condensenet_182": ("513M", "4.2M"),
    "condensenet_74_g4": ("529M", "4.8M"),
    "condensenet_74_g8": ("274M", "2.9M"),
    "cdnv2_a": ("46M", "2.0M"),
    "cdnv2_b": ("146M", "3.6M"),
    "cdnv2_c": ("309M", "6.1M"),
    "cdnv2_110": ("41M", "0.48M"),
    "cdnv2_146": ("62M", "0.78M"),
    "rexnet_0_9": ("0.35G", "4.1M"),
    "rexnet_1_0": ("0.40G", "4.8M"),
    "rexnet_1_3": ("0.66G", "7.6M"),
    "rexnet_1_5": ("0.88G", "9.7M"),
    "rexnet_2_0": ("1.5G", "16M"),
    "rexnet_3_0": ("3.4G", "34M"),
    "rexnet_lite_1_0": ("0.41G", "4.7M"),
    "rexnet_lite_1_3": ("0.65G", "6.8M"),
    "rexnet_lite_1_5": ("0.84G", "8.3M"),
    "rexnet_lite_2_0": ("1.5G", "13M"),
}

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
         nn.modules.instancenorm._InstanceNorm)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVGPOOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_HS_NAMES = ("hs", "hswish", "hardswish", "h_swish")


def _numel(t):
    return t.numel() if torch.is_tensor(t) else 0


def _first_tensor(x):
    if torch.is_tensor(x):
        return x
    if isinstance(x, (tuple, list)):
        for item in x:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _own_params(module):
    return sum(p.numel() for p in module.parameters(recurse=False))


def _all_params(module):
    return sum(p.numel() for p in module.parameters())


def _is_hard_swish(module):
    return isinstance(module, nn.Hardswish) or type(module).__name__.lower() in _HS_NAMES


def _conv_macs(module, inp, out):
    if isinstance(module, _CONV_T):  # each input element meets every weight of its group once
        return module.weight.numel() * math.prod(inp.shape[2:])
    return module.weight.numel() * math.prod(out.shape[2:])


def _linear_macs(module, out):
    # weight numel per output row; a 2-D input has one row per image
    rows = out.numel() // max(1, out.shape[0] * module.out_features)
    return module.weight.numel() * rows


def _kernel_volume(kernel_size, dims):
    if isinstance(kernel_size, int):
        return kernel_size ** dims
    return math.prod(kernel_size)


def _leaf_ops(module, inp, out, rule):
    """Ops of one call of a leaf module under rule 'v1' or 'v2' (per image, batch 1)."""
    if isinstance(module, _CONV + _CONV_T):
        return _conv_macs(module, inp, out)
    if isinstance(module, nn.Linear):
        ops = _linear_macs(module, out)
        if rule == "v1" and module.bias is not None:
            ops += out.numel()  # one add per output
        return ops
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return _numel(inp)
    if rule == "v2" and _is_hard_swish(module):
        return _numel(inp)  # one op per element, what the reference charges its relu6
    if rule == "v2" and isinstance(module, nn.Sigmoid):
        return 2 * _numel(inp)
    if isinstance(module, _AVGPOOL):
        return out.numel() * _kernel_volume(module.kernel_size, out.dim() - 2)
    if isinstance(module, _ADAPTIVE_AVGPOOL):
        return _numel(inp)
    if isinstance(module, _NORM + (nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.Identity)):
        return 0
    if _own_params(module):
        raise TypeError(f"the {rule!r} FLOPs rule does not know how to count {type(module).__name__} "
                        f"(it has parameters); give it a count_ops(inputs, output) method")
    return 0  # parameter-free and unknown (Flatten, MaxPool, SiLU, ...): not counted


def _macs_ops(module, inp, out):
    if isinstance(module, _CONV + _CONV_T):
        return _conv_macs(module, inp, out)
    if isinstance(module, nn.Linear):
        return _linear_macs(module, out)
    return 0


def _plan(model, rule):
    """[(module, kind)] for the modules that get a hook: kind 'custom' (count_ops) or 'leaf'."""
    plan = []

    def visit(module, name):
        if rule != "macs" and callable(getattr(module, "count_ops", None)):
            plan.append((module, "custom"))
            return
        children = list(module.named_children())
        if rule == "v2" and _is_hard_swish(module):   # a leaf even with its (unused) relu6 child
            plan.append((module, "leaf"))
            return
        if not children:
            plan.append((module, "leaf"))
            return
        if rule != "macs" and _own_params(module):
            raise TypeError(f"module {name or type(model).__name__!r} ({type(module).__name__}) holds "
                            f"parameters of its own besides children; the {rule!r} FLOPs rule cannot "
                            f"count it without a count_ops(inputs, output) method")
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    return plan


def _resolve_input_size(model, input_size):
    if input_size is None:
        input_size = (getattr(model, "data_cfg", None) or {}).get("input_size", (3, 224, 224))
    if isinstance(input_size, int):
        input_size = (3, input_size, input_size)
    return tuple(int(s) for s in input_size)


def _tidy(x):
    return int(x) if float(x).is_integer() else float(x)


def _meta_copy(model):
    """A copy of ``model`` whose parameters and buffers live on the meta device (no data copied)."""
    memo = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _count_pass(model, rule, x):
    """Ops and params of one forward pass of ``x`` through ``model`` (hooks removed afterwards)."""
    totals = {"ops": 0, "params": 0}
    seen = set()  # params of a module are counted once, even if it is called several times

    def add_params(module, n):
        if id(module) not in seen:
            seen.add(id(module))
            totals["params"] += n

    def hook_custom(module, inputs, output):
        ops, params = module.count_ops(inputs, output)
        totals["ops"] += float(ops) if torch.is_tensor(ops) else ops
        add_params(module, float(params) if torch.is_tensor(params) else params)

    def hook_leaf(module, inputs, output):
        inp, out = _first_tensor(inputs), _first_tensor(output)
        if rule == "macs":
            totals["ops"] += _macs_ops(module, inp, out)
        else:
            totals["ops"] += _leaf_ops(module, inp, out, rule)
            add_params(module, _own_params(module))

    states = {m: m.training for m in model.modules()}
    handles = []
    try:
        for module, kind in _plan(model, rule):
            handles.append(module.register_forward_hook(hook_custom if kind == "custom" else hook_leaf))
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in states.items():
            m.training = training
    return totals["ops"], totals["params"]


def profile(model, input_size=None, rule=None):
    """``(flops, params)`` per image of ``model`` under ``rule`` (default ``model.flops_rule``).

    ``input_size`` is the shape of one sample, e.g. (C, H, W), or an int side of a 3-channel image;
    default ``model.data_cfg['input_size']``, else (3, 224, 224).

    The pass runs on a copy of the model on the meta device (shapes only: fast, and the model's
    buffers are not touched); a model whose forward needs real values (data-dependent control
    flow) is run for real instead, in eval mode under no_grad, with each module's train/eval
    state restored and all hooks removed afterwards.
    """
    rule = rule if rule is not None else getattr(model, "flops_rule", None)
    if rule not in RULES:
        raise ValueError(f"unknown FLOPs rule {rule!r}; use one of {', '.join(RULES)} "
                         f"(or give the model a flops_rule attribute)")
    input_size = _resolve_input_size(model, input_size)
    _plan(model, rule)  # raise for modules the rule cannot count before running anything
    ref = next(model.parameters(), None)
    if ref is None:
        ref = next(model.buffers(), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    try:
        ops, params = _count_pass(_meta_copy(model), rule,
                                  torch.zeros((1,) + input_size, device="meta", dtype=dtype))
    except Exception:  # noqa: BLE001 - any failure of the shape-only pass: count a real pass
        device = ref.device if ref is not None else torch.device("cpu")
        mkldnn_was = torch.backends.mkldnn.enabled
        # oneDNN builds a kernel per new conv shape on its first call (seconds for a deep dense
        # net); the counts need shapes only, so the plain CPU kernels are used for this one pass
        torch.backends.mkldnn.enabled = False
        try:
            ops, params = _count_pass(model, rule, torch.zeros((1,) + input_size, device=device, dtype=dtype))
        finally:
            torch.backends.mkldnn.enabled = mkldnn_was
    if rule == "macs":
        params = _all_params(model)
    return _tidy(ops), _tidy(params)


_UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def format_count(n, unit=None, digits=2):
    """``65820000 -> '65.82M'``; ``format_count(4e8, 'G') -> '0.40G'``. Default unit by magnitude."""
    if unit is None:
        unit = next((u for u in ("T", "G", "M", "K") if abs(n) >= _UNITS[u]), "")
    if unit not in _UNITS:
        raise ValueError(f"unknown unit {unit!r}; use one of {', '.join(u for u in _UNITS if u)}")
    return f"{n / _UNITS[unit]:.{digits}f}{unit}"


def flops_table(items, input_size=None, rule=None, build=None, published=None):
    """Rows ``(name, params, flops, published)`` for printing.

    ``items``: model names (built with ``build(name)``, e.g. ``build=create_model`` - utils does not
    import graphs), nn.Modules, or ``(name, module)`` pairs. ``published`` maps names to a
    ``(flops, params)`` string pair (default :data:`PUBLISHED`); missing names give ``''``.
    ``params``/``flops`` are formatted with :func:`format_count`.
    """
    published = PUBLISHED if published is None else published
    rows = []
    for item in items:
        if isinstance(item, str):
            if build is None:
                raise ValueError(f"cannot build {item!r}: pass build=create_model (or modules)")
            name, model = item, build(item)
        elif isinstance(item, (tuple, list)):
            name, model = item
        else:
            name, model = type(item).__name__, item
        flops, params = profile(model, input_size=input_size, rule=rule)
        pub = published.get(name)
        rows.append((name, format_count(params), format_count(flops),
                     f"{pub[0]} / {pub[1]}" if pub else ""))
    return rows


def format_table(rows, header=("model", "params", "FLOPs", "published FLOPs / params")):
    """The rows of :func:`flops_table` as aligned text lines."""
    rows = [tuple(header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return os.linesep.join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
