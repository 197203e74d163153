"""Export a model for deployment: ONNX (checked with onnxruntime) and TorchScript (checked on reload).

Both writers are atomic (utils.atomic_io: a crash or a full disk never leaves a half-written file, an
old file stays intact until the new one is complete). Both verify the exported model against PyTorch on
batches of 1 and 3, which also proves that the batch axis is dynamic although the model was traced with
a batch of 2.

Export a *converted* (deployable) CondenseNet / CondenseNetV2 (``model.convert()``): the training-time
learned group convolutions carry masks and condensation state that a deployment graph does not need.

ONNX exporter choice (torch 2.14): ``exporter='auto'`` (default) uses the TorchScript-based exporter
(``dynamo=False``): it exports several times faster, keeps the requested
opset (the dynamo exporter only implements opset >= 18 and its down-conversion to 17 fails on ReXNet),
and handles every op of these models: index_select, channel shuffles (view/transpose/reshape with a
traced batch size), partial residual via cat, hard-swish, SE. One op needs help: its builtin
``aten::index_add`` symbolic emits ScatterND without reduction, which is WRONG when the index has
duplicate entries (it keeps one addend instead of summing), as a converted CondensedSFR can have (two
groups reactivating the same old channel). While exporting, :func:`export_onnx` therefore registers a
scoped override that emits ``ScatterElements(reduction='add')`` (opset >= 16) and removes it afterwards
(``graphs.layers.runtime.legacy_onnx_overrides``, which the detector export uses too).
If the legacy export raises or fails the parity check, 'auto' retries with the dynamo exporter.
"""
import contextlib
import io
import os
import re
import warnings

import numpy as np
import torch

from graphs.layers.runtime import legacy_onnx_overrides
from utils import shutdown
from utils.atomic_io import atomic_path, atomic_write, check_writable
from utils.errors import ConfigError, ExportError, WriteError

__all__ = ["export_onnx", "export_torchscript", "resolve_input_size", "first_output", "reference_logits"]

EXPORTERS = ("auto", "legacy", "dynamo")


# ------------------------------------------------------------------------------------ helpers
def _first_line(exc):
    """``Type: first line of the message`` without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


# ------------------------------------------------------------------------------------ model helpers
def resolve_input_size(model, input_size=None):
    """``input_size`` as a (C, H, W) tuple of ints, defaulting to ``model.pretrained_cfg.input_size``."""
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is None:
            raise ConfigError("the model has no pretrained_cfg; pass input_size=(C, H, W)")
        input_size = cfg.input_size
    try:
        size = tuple(int(v) for v in input_size)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"input_size must be three positive integers (C, H, W), got {input_size!r}")
    return size


def _model_device_dtype(model):
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


def first_output(out):
    """The logits of a model output (a tensor, or the first entry of a tuple/list/dict)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        out = next(iter(out.values()))
    return out


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _check_inputs(input_size, batch_sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, *input_size, generator=g) for b in batch_sizes]


@torch.no_grad()
def reference_logits(model, x):
    """The model's logits (float32, CPU) for ``x`` moved to the model's device and dtype."""
    device, dtype = _model_device_dtype(model)
    return first_output(model(x.to(device=device, dtype=dtype))).float().cpu()


# ------------------------------------------------------------------------------------ ONNX
def _export_legacy(model, dummy, path, opset):
    with legacy_onnx_overrides(opset), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), path, dynamo=False, opset_version=opset,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          do_constant_folding=True)


def _export_dynamo(model, dummy, path, opset):
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as devnull:
        warnings.simplefilter("ignore")
        try:
            # the dynamo exporter implements opset 18 and later: asking for less makes it convert the graph
            # down, which fails for some graphs with a logged traceback (the file then keeps 18 anyway)
            program = torch.onnx.export(model, (dummy,), dynamo=True, opset_version=max(opset, 18),
                                        input_names=["input"], output_names=["output"],
                                        dynamic_shapes=({0: batch},), verbose=False)
        finally:
            devnull.close()
    program.save(path, external_data=False)


def _onnx_parity(path, model, input_size, batch_sizes):
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(path)
    opsets = {o.domain: o.version for o in onnx.load(path, load_external_data=False).opset_import}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    diff, scale = 0.0, 1.0
    for x in _check_inputs(input_size, batch_sizes):
        ref = reference_logits(model, x).numpy()
        scale = max(scale, float(np.abs(ref).max()))
        out = sess.run(None, {name: x.numpy().astype(np.float32)})[0]
        if out.shape != ref.shape:
            raise ExportError(f"the ONNX model returns shape {out.shape} for a batch of {x.shape[0]} but "
                              f"PyTorch returns {ref.shape}; the batch axis is not dynamic")
        diff = max(diff, float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max()))
    return diff, opsets.get("", opsets.get("ai.onnx")), scale


def export_onnx(model, path, input_size=None, opset=17, check=True, exporter="auto", atol=1e-4,
                batch_sizes=(1, 3)):
    """Export ``model`` (eval mode) to ONNX at ``path`` with a dynamic batch axis.

    The graph is traced with a random batch of 2 of ``input_size`` (default: the model's
    ``pretrained_cfg.input_size``); input ``'input'`` (N, C, H, W) float32, output ``'output'`` (N, classes).
    ``exporter``: 'auto' | 'legacy' (TorchScript-based, ``dynamo=False``) | 'dynamo'.
    With ``check`` the file is validated by ``onnx.checker`` and run with onnxruntime
    (CPUExecutionProvider) on batches of ``batch_sizes``; a maximum absolute difference to PyTorch
    above ``atol * max(1, max|logit|)`` raises :class:`ExportError` ('auto' first retries with the
    dynamo exporter).
    The model's train/eval mode is restored afterwards.

    Returns ``{'path', 'max_abs_diff' (None without check), 'batch_sizes', 'opset', 'exporter'}``;
    ``opset`` is the one written in the file.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if not isinstance(opset, int) or opset < 9:
        raise ConfigError(f"opset must be an integer >= 9, got {opset!r}")
    input_size = resolve_input_size(model, input_size)
    path = check_writable(path, "ONNX file")
    device, dtype = _model_device_dtype(model)
    dummy = _check_inputs(input_size, (2,), seed=1)[0].to(device=device, dtype=dtype)
    tries = ["legacy", "dynamo"] if exporter == "auto" else [exporter]
    errors = []
    with _eval_mode(model):
        for kind in tries:
            try:
                with atomic_path(path, "ONNX file") as tmp:
                    (_export_legacy if kind == "legacy" else _export_dynamo)(model, dummy, tmp, opset)
                    diff, file_opset = None, opset
                    if check:
                        diff, file_opset, scale = _onnx_parity(tmp, model, input_size, batch_sizes)
                        if not diff <= atol * scale:  # also catches NaN
                            raise ExportError(f"the ONNX file ({kind} exporter) differs from PyTorch by "
                                              f"{diff:.3g} > {atol * scale:.3g}")
                return {"path": path, "max_abs_diff": diff, "batch_sizes": list(batch_sizes) if check else [],
                        "opset": int(file_opset), "exporter": kind}
            except (ConfigError, WriteError):
                raise
            except Exception as e:  # exporter failure or parity failure: try the next exporter
                shutdown.honour()   # unless it was a stop signal the tracer turned into its own error
                errors.append(f"{kind}: {_first_line(e)}")
    raise ExportError(f"ONNX export of {type(model).__name__} failed ({'; '.join(errors)}); export a converted "
                      f"model (model.convert()) or try another exporter/opset")


# ------------------------------------------------------------------------------------ TorchScript
def export_torchscript(model, path, input_size=None, method="trace", check=True, atol=1e-5,
                       batch_sizes=(1, 3)):
    """Save ``model`` (eval mode) as TorchScript at ``path`` (atomic), after reloading the saved bytes
    and comparing them with PyTorch.

    ``method='trace'`` (default; the models use Python containers and properties that scripting does
    not support) traces with a batch of 2; ``'script'`` uses ``torch.jit.script``; ``'auto'`` tries
    script, then trace. The reloaded module is run on the model's device on batches of ``batch_sizes``.

    Returns ``{'path', 'max_abs_diff' (None without check), 'batch_sizes', 'method'}``.
    """
    if method not in ("trace", "script", "auto"):
        raise ConfigError(f"method must be 'trace', 'script' or 'auto', got {method!r}")
    input_size = resolve_input_size(model, input_size)
    path = check_writable(path, "TorchScript file")
    device, dtype = _model_device_dtype(model)
    dummy = _check_inputs(input_size, (2,), seed=1)[0].to(device=device, dtype=dtype)
    with _eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        used, scripted, errors = None, None, []
        for kind in (["script", "trace"] if method == "auto" else [method]):
            try:
                if kind == "script":
                    scripted = torch.jit.script(model)
                else:
                    with torch.no_grad():
                        scripted = torch.jit.trace(model, (dummy,), check_trace=False)
                used = kind
                break
            except Exception as e:
                errors.append(f"{kind}: {_first_line(e)}")
        if scripted is None:
            raise ExportError(f"TorchScript export of {type(model).__name__} failed ({'; '.join(errors)})")
        # saved to memory, checked, then written: torch.jit.save aborts the process (std::terminate)
        # when a write to a file fails mid-way, e.g. on a full disk
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        diff = None
        if check:
            buf.seek(0)
            loaded = torch.jit.load(buf, map_location=device)
            loaded.eval()
            diff = 0.0
            for x in _check_inputs(input_size, batch_sizes):
                ref = reference_logits(model, x)
                # no profiling re-optimisation per new shape: the check stays fast
                with torch.no_grad(), torch.jit.optimized_execution(False):
                    out = first_output(loaded(x.to(device=device, dtype=dtype))).float().cpu()
                if out.shape != ref.shape:
                    raise ExportError(f"the TorchScript model returns shape {tuple(out.shape)} for a batch "
                                      f"of {x.shape[0]} but PyTorch returns {tuple(ref.shape)}")
                diff = max(diff, float((out.double() - ref.double()).abs().max()))
            if not diff <= atol:
                raise ExportError(f"the TorchScript file ({used}) differs from PyTorch by {diff:.3g} > {atol:g}")
    atomic_write(path, buf.getvalue(), "TorchScript file")
    return {"path": path, "max_abs_diff": diff, "batch_sizes": list(batch_sizes) if check else [],
            "method": used}
