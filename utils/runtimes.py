"""Deployment runtimes: OpenVINO IR export (fp32, int8 through NNCF), onnxruntime int8, and loading a
deployed file to run it on real data (``load_runtime``).

Artifacts:
  * ``.onnx`` (``utils.export.export_onnx``) runs on onnxruntime or OpenVINO;
  * OpenVINO IR ``.xml`` + ``.bin`` (:func:`export_openvino`; :func:`export_openvino_int8` quantizes it
    with NNCF's post-training quantization, ``nncf.quantize``);
  * ``.onnx`` int8 in QDQ form (:func:`export_onnx_int8`, onnxruntime's ``quantize_static``).
Every writer is atomic (utils.atomic_io; the IR's old ``.xml`` is removed before and the new one renamed
after its ``.bin``, so neither a reader nor a crash pairs an ``.xml`` with another export's weights).

OpenVINO's CPU plugin runs fp32 models in bf16 by default on CPUs with bf16 instructions (changing
the logits by ~1e-2); ``precision='f32'`` (default here) pins fp32, so a deployed file reproduces the
PyTorch logits; ``precision='auto'`` keeps the plugin's choice. int8 models keep their int8 kernels
under either setting.

Quantizing runs under :func:`quiet_known_noise`: the third-party log lines listed in ``KNOWN_NOISE`` are
dropped (every other warning still shows) and NNCF's progress bars go to stderr with the project's.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile

import numpy as np
import torch

from utils.atomic_io import atomic_path, atomic_paths, check_writable
from utils.errors import ConfigError
from utils.export import ExportError, resolve_input_size

__all__ = ["RUNTIMES", "Runtime", "load_runtime", "export_openvino", "export_openvino_int8",
           "export_onnx_int8", "check_artifact", "calibration_batches", "quiet_known_noise"]

RUNTIMES = ("onnxruntime", "openvino")
_PIP = {"onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf"}


def _require(module):
    """Import a runtime package or raise ConfigError naming the pip command."""
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(f"the {module} package is not installed; run `pip install {_PIP[module]}` "
                          f"(it is in requirements.txt)") from e


def _numpy_batch(x):
    if isinstance(x, (list, tuple)):       # (images, labels) batches from a loader
        x = x[0]
    if torch.is_tensor(x):
        x = x.detach().float().cpu().contiguous().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ConfigError(f"a runtime input must be a float32 NCHW batch, got shape {tuple(x.shape)}")
    return x


def calibration_batches(calibration, what):
    """The calibration iterable as a list of float32 NCHW numpy batches; ConfigError when empty/None."""
    if calibration is None:
        raise ConfigError(f"{what} needs calibration data: pass a few hundred training images with the eval "
                          f"transform (the export command uses calibration_size training images)")
    batches = [_numpy_batch(b) for b in calibration]
    if not batches:
        raise ConfigError(f"{what} needs calibration data but the calibration set is empty; "
                          f"set calibration_size >= 1")
    return batches


# Log lines of the quantizers that tell a user nothing to act on, by the logger that emits them:
# onnxruntime's quantizer (root logger) warns once per 1-D weight (a BatchNorm scale left as a Mul) that
# it quantizes per tensor since a vector has no channel axis; NNCF's import of torch.utils.cpp_extension
# warns that no CUDA toolkit is installed (no extension is compiled here).
KNOWN_NOISE = {
    "root": re.compile(r"Axis \d+ is out-of-range for weight '[^']*' with rank 1$"),
    "torch.utils.cpp_extension": re.compile(r"No CUDA runtime is found, using CUDA_HOME="),
}


class KnownNoiseFilter(logging.Filter):
    """Drops the records that ``KNOWN_NOISE`` lists for their logger; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        pattern = KNOWN_NOISE.get(record.name)
        return not (pattern is not None and pattern.match(record.getMessage()))


@contextlib.contextmanager
def quiet_known_noise():
    """Within: ``KNOWN_NOISE`` dropped (a filter on each listed logger, so it holds whichever handler
    prints that logger's records) and stdout sent to stderr, where NNCF's progress bars join the project's."""
    noise = KnownNoiseFilter()
    loggers = [logging.getLogger(name) for name in KNOWN_NOISE]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


# ------------------------------------------------------------------------------------ running
class Runtime:
    """A deployed model on onnxruntime or OpenVINO: ``runtime(x)`` -> float32 logits (torch tensor).

    ``input_size`` (C, H, W) and ``num_classes`` are read from the artifact (None where dynamic).
    """

    def __init__(self, path, kind, run, input_shape, output_shape):
        self.path, self.kind, self._run = path, kind, run
        dims = [d if isinstance(d, int) and d > 0 else None for d in input_shape]
        self.input_size = tuple(dims[1:]) if len(dims) == 4 and None not in dims[1:] else None
        out = output_shape[-1] if output_shape else None
        self.num_classes = out if isinstance(out, int) and out > 0 else None

    def __call__(self, x):
        x = _numpy_batch(x)
        if self.input_size is not None and tuple(x.shape[1:]) != self.input_size:
            raise ConfigError(f"{os.path.basename(self.path)} takes inputs of size {self.input_size}, got "
                              f"{tuple(x.shape[1:])}; use the input_size the file was exported with")
        return torch.from_numpy(np.asarray(self._run(x), dtype=np.float32))

    def run_array(self, x):
        """The raw call on a float32 NCHW numpy array, without conversion or checks (for timing)."""
        return self._run(x)

    def __repr__(self):
        return f"Runtime({self.kind}, {self.path!r}, input_size={self.input_size}, num_classes={self.num_classes})"


def _ov_config(threads, precision):
    cfg = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    if precision == "f32":
        cfg["INFERENCE_PRECISION_HINT"] = "f32"
    return cfg


def _shape(partial):
    return [d.get_length() if d.is_static else None for d in partial]


def load_runtime(path, kind=None, threads=None, precision="f32", batch=None):
    """Load a deployed ``.onnx`` / OpenVINO ``.xml`` file on ``kind`` ('onnxruntime' | 'openvino';
    default: OpenVINO for ``.xml``, onnxruntime for ``.onnx``) with ``threads`` intra-op threads.
    ``batch``: OpenVINO only, fix the batch axis (static shapes compile slightly faster kernels).

    Returns a :class:`Runtime`. A missing file or package, an unknown kind, or an ``.xml`` on onnxruntime
    raise ConfigError (one sentence)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"runtime artifact {path!r} does not exist; run --mode export first")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".onnx", ".xml"):
        raise ConfigError(f"{path!r} is not a runtime artifact; give an .onnx file or an OpenVINO .xml")
    kind = kind or ("openvino" if ext == ".xml" else "onnxruntime")
    if kind not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {kind!r}")
    if precision not in ("f32", "auto"):
        raise ConfigError(f"precision must be 'f32' or 'auto', got {precision!r}")
    if kind == "onnxruntime":
        if ext == ".xml":
            raise ConfigError(f"{path!r} is an OpenVINO IR; run it with runtime 'openvino' or give the .onnx file")
        ort = _require("onnxruntime")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
        try:
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ConfigError(f"onnxruntime cannot load {path!r} ({type(e).__name__}); re-export it") from e
        name = sess.get_inputs()[0].name
        return Runtime(path, kind, lambda x: sess.run(None, {name: x})[0], sess.get_inputs()[0].shape,
                       sess.get_outputs()[0].shape)
    ov = _require("openvino")
    try:
        core = ov.Core()
        model = core.read_model(path)
        if batch:
            shape = model.input(0).get_partial_shape()
            shape[0] = int(batch)
            model.reshape(shape)
        compiled = core.compile_model(model, "CPU", _ov_config(threads, precision))
    except Exception as e:
        raise ConfigError(f"OpenVINO cannot load {path!r} ({type(e).__name__}); re-export it") from e
    request = compiled.create_infer_request()

    def run(x):
        return request.infer({0: x})[compiled.output(0)]
    return Runtime(path, kind, run, _shape(compiled.input(0).get_partial_shape()),
                   _shape(compiled.output(0).get_partial_shape()))


def check_artifact(runtime, input_size=None, num_classes=None):
    """ConfigError (one sentence) unless the artifact takes ``input_size`` and returns ``num_classes``."""
    if input_size is not None and runtime.input_size is not None and tuple(input_size) != runtime.input_size:
        raise ConfigError(f"{runtime.path} was exported for inputs {runtime.input_size} but the config uses "
                          f"{tuple(input_size)}; export again or set input_size to match")
    if num_classes is not None and runtime.num_classes is not None and int(num_classes) != runtime.num_classes:
        raise ConfigError(f"{runtime.path} has {runtime.num_classes} classes but the config's model has "
                          f"{num_classes}; give the file exported for this model")
    return runtime


# ------------------------------------------------------------------------------------ OpenVINO IR
def _ir_paths(path):
    path = check_writable(path, "OpenVINO IR")
    if not path.endswith(".xml"):
        raise ConfigError(f"an OpenVINO IR path must end in .xml, got {path!r}")
    return path, path[:-4] + ".bin"


def _save_ir(ov_model, path):
    """Save ``ov_model`` as ``path`` (.xml) + .bin, the pair atomically (save_model derives the .bin's
    temporary name from the .xml's)."""
    ov = _require("openvino")
    xml, binp = _ir_paths(path)
    with atomic_paths(xml, binp, what="OpenVINO IR") as (tmp_xml, _):
        ov.save_model(ov_model, tmp_xml, compress_to_fp16=False)
    return xml


def _onnx_for(model, onnx_path, input_size, tmpdir):
    """An ONNX file of ``model``: ``onnx_path`` if given and present, else exported (checked) into tmpdir."""
    if onnx_path is not None and os.path.isfile(onnx_path):
        return onnx_path
    from utils.export import export_onnx
    path = onnx_path or os.path.join(tmpdir, "model.onnx")
    export_onnx(model, path, input_size)
    return path


@torch.no_grad()
def _parity(model, runtime, input_size, batches=(1, 3), seed=0):
    """Max |runtime - PyTorch| and max |PyTorch| on random batches."""
    from utils.export import _reference
    g = torch.Generator().manual_seed(seed)
    diff, scale = 0.0, 1.0
    was = model.training
    model.eval()
    try:
        for b in batches:
            x = torch.randn(b, *input_size, generator=g)
            ref = _reference(model, x)
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
    ov = _require("openvino")
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
    ov = _require("openvino")
    nncf = _require("nncf")
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


def export_onnx_int8(onnx_path, path, calibration, per_channel=True):
    """onnxruntime static int8 quantization (QDQ, per-channel weights) of the fp32 ONNX file
    ``onnx_path``, calibrated on ``calibration`` (see :func:`export_openvino_int8`), written at ``path``.

    Returns ``{'path', 'calibration_images'}``."""
    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    batches = calibration_batches(calibration, "int8 export")
    if not os.path.isfile(onnx_path):
        raise ConfigError(f"ONNX file {onnx_path!r} does not exist; export onnx first")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    with tempfile.TemporaryDirectory() as tmp, atomic_path(path, "int8 ONNX file") as out, quiet_known_noise():
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(onnx_path, pre, skip_symbolic_shape=True)
        quantize_static(pre, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return {"path": path, "calibration_images": sum(b.shape[0] for b in batches)}
