"""OpenVINO IR export: fp32 (:func:`export_openvino`) and int8 through NNCF's post-training quantization
(:func:`export_openvino_int8`, ``nncf.quantize``), both converted from the model's checked ONNX export.

Every writer is atomic (utils.atomic_io; the IR's old ``.xml`` is removed before and the new one renamed
after its ``.bin``, so neither a reader nor a crash pairs an ``.xml`` with another export's weights).
"""
import os
import tempfile

import torch

from utils.atomic_io import atomic_paths, check_writable
from utils.errors import ConfigError, ExportError

from .export import export_onnx, reference_logits, resolve_input_size
from .quantize import calibration_batches, quiet_known_noise
from .runtime import load_runtime, require_package

__all__ = ["export_openvino", "export_openvino_int8"]


def _ir_paths(path):
    path = check_writable(path, "OpenVINO IR")
    if not path.endswith(".xml"):
        raise ConfigError(f"an OpenVINO IR path must end in .xml, got {path!r}")
    return path, path[:-4] + ".bin"


def _save_ir(ov_model, path):
    """Save ``ov_model`` as ``path`` (.xml) + .bin, the pair atomically (save_model derives the .bin's
    temporary name from the .xml's)."""
    ov = require_package("openvino")
    xml, binp = _ir_paths(path)
    with atomic_paths(xml, binp, what="OpenVINO IR") as (tmp_xml, _):
        ov.save_model(ov_model, tmp_xml, compress_to_fp16=False)
    return xml


def _onnx_for(model, onnx_path, input_size, tmpdir):
    """An ONNX file of ``model``: ``onnx_path`` if given and present, else exported (checked) into tmpdir."""
    if onnx_path is not None and os.path.isfile(onnx_path):
        return onnx_path
    path = onnx_path or os.path.join(tmpdir, "model.onnx")
    export_onnx(model, path, input_size)
    return path


@torch.no_grad()
def _parity(model, runtime, input_size, batches=(1, 3), seed=0):
    """Max |runtime - PyTorch| and max |PyTorch| on random batches."""
    g = torch.Generator().manual_seed(seed)
    diff, scale = 0.0, 1.0
    was = model.training
    model.eval()
    try:
        for b in batches:
            x = torch.randn(b, *input_size, generator=g)
            ref = reference_logits(model, x)
            out = runtime(x)
            scale = max(scale, float(ref.abs().max()))
            diff = max(diff, float((out.double() - ref.double()).abs().max()))
    finally:
        model.train(was)
    return diff, scale


def export_openvino(model, path, input_size=None, onnx_path=None, check=True, atol=1e-4):
    """Write ``model`` as OpenVINO IR (``path`` = ``.xml``, weights in ``.bin`` beside it), converted with
    ``openvino.convert_model`` from its ONNX export (``onnx_path`` if it exists, else a checked temporary
    export). With ``check`` the IR runs in fp32 on OpenVINO's CPU plugin against PyTorch on batches of 1
    and 3; a difference above ``atol * max(1, max|logit|)`` raises ExportError.

    Returns ``{'path', 'bin', 'max_abs_diff' (None without check)}``."""
    ov = require_package("openvino")
    input_size = resolve_input_size(model, input_size)
    xml, binp = _ir_paths(path)
    with tempfile.TemporaryDirectory() as tmp:
        ov_model = ov.convert_model(_onnx_for(model, onnx_path, input_size, tmp))
        _save_ir(ov_model, xml)
    diff = None
    if check:
        diff, scale = _parity(model, load_runtime(xml, "openvino"), input_size)
        if not diff <= atol * scale:
            raise ExportError(f"the OpenVINO IR differs from PyTorch by {diff:.3g} > {atol * scale:.3g}")
    return {"path": xml, "bin": binp, "max_abs_diff": diff}


def export_openvino_int8(model, path, calibration, input_size=None, onnx_path=None, preset="performance",
                         fast_bias_correction=True):
    """Post-training int8 quantization with NNCF (``nncf.quantize``) of the model's OpenVINO form,
    calibrated on ``calibration`` (an iterable of float32 NCHW numpy/torch batches or (images, labels)
    pairs, the eval transform applied), written as IR at ``path`` (.xml + .bin, atomic).

    Returns ``{'path', 'bin', 'calibration_images'}``; accuracy is the caller's to measure (int8 changes
    the logits by design; see ``load_runtime``)."""
    ov = require_package("openvino")
    nncf = require_package("nncf")
    batches = calibration_batches(calibration, "int8 export")
    input_size = resolve_input_size(model, input_size)
    xml, binp = _ir_paths(path)
    with tempfile.TemporaryDirectory() as tmp, quiet_known_noise():
        ov_model = ov.convert_model(_onnx_for(model, onnx_path, input_size, tmp))
        preset = {"performance": nncf.QuantizationPreset.PERFORMANCE,
                  "mixed": nncf.QuantizationPreset.MIXED}[preset]
        n = sum(b.shape[0] for b in batches)
        q = nncf.quantize(ov_model, nncf.Dataset(batches), preset=preset, subset_size=len(batches),
                          fast_bias_correction=fast_bias_correction)
        _save_ir(q, xml)
    return {"path": xml, "bin": binp, "calibration_images": n}
