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

A module type with a counter registered by :func:`register_counter` (the masked learned group
convolution and SFR layers register theirs in ``graphs/layers/counting.py``) is counted by that
function and its children are not visited ('v1'/'v2'); that is how an unconverted CondenseNet is
charged its final condensed cost (MACs / C, weight / C). Converted models are counted by recursing into their BN, ReLU, conv and
Linear children; ``index_select``, channel shuffles, ``torch.cat`` and other functional ops
(including the converted SFR's index matmul and the partial ReXNet shortcut) are not counted.

Under 'macs' registered counters are ignored: the counter recurses and charges every conv's dense MACs,
which is what the module costs as it runs.

The pass uses a batch of one image; every count is per image (the v2 reference uses a batch of
two and divides by it, which gives the same numbers in eval mode). Counters therefore get
batch-1 tensors; a counter sees them as usually meta tensors (shapes only, no values), because the pass runs on
a meta-device copy of the model, falling back to a real pass when the forward needs values.
"""
import copy
import math

import torch
import torch.nn as nn

RULES = ("v1", "v2", "macs")

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
         nn.modules.instancenorm._InstanceNorm)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE_AVGPOOL = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_COUNTERS = {}      # module type -> (rules, fn(module, inputs, output) -> (ops, params))


def register_counter(module_type: type, rules: tuple = ("v1", "v2")):
    """Decorator: count modules of ``module_type`` (and subclasses) with ``fn`` under ``rules``."""
    def wrap(fn):
        _COUNTERS[module_type] = (tuple(rules), fn)
        return fn
    return wrap


def _counter(module, rule):
    for cls in type(module).__mro__:
        entry = _COUNTERS.get(cls)
        if entry is not None and rule in entry[0]:
            return entry[1]
    return None


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
    if rule == "v2" and isinstance(module, nn.Hardswish):
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
                        f"(it has parameters); register a counter for it (graphs.flops.register_counter)")
    return 0  # parameter-free and unknown (Flatten, MaxPool, SiLU, ...): not counted


def _macs_ops(module, inp, out):
    if isinstance(module, _CONV + _CONV_T):
        return _conv_macs(module, inp, out)
    if isinstance(module, nn.Linear):
        return _linear_macs(module, out)
    return 0


def _plan(model, rule):
    """[(module, counter or None)] for the modules that get a hook: a registered counter, or None (leaf)."""
    plan = []

    def visit(module, name):
        counter = _counter(module, rule) if rule != "macs" else None
        if counter is not None:
            plan.append((module, counter))
            return
        children = list(module.named_children())
        if not children:
            plan.append((module, None))
            return
        if rule != "macs" and _own_params(module):
            raise TypeError(f"module {name or type(model).__name__!r} ({type(module).__name__}) holds "
                            f"parameters of its own besides children; the {rule!r} FLOPs rule cannot "
                            f"count it without a registered counter (graphs.flops.register_counter)")
        for child_name, child in children:
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    return plan


def _resolve_input_size(model, input_size):
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        input_size = cfg.input_size if cfg is not None else (3, 224, 224)
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

    def hook_custom(counter):
        def hook(module, inputs, output):
            ops, params = counter(module, inputs, output)
            totals["ops"] += float(ops) if torch.is_tensor(ops) else ops
            add_params(module, float(params) if torch.is_tensor(params) else params)
        return hook

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
        for module, counter in _plan(model, rule):
            handles.append(module.register_forward_hook(hook_custom(counter) if counter else hook_leaf))
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
    default ``model.pretrained_cfg.input_size``, else (3, 224, 224).

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
