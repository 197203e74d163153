"""A deployed file run on real data: an ``.onnx`` file on onnxruntime or an OpenVINO IR ``.xml`` on OpenVINO
(:func:`load_runtime` returns a :class:`Runtime`, called like a model).

OpenVINO's CPU plugin runs fp32 models in bf16 by default on CPUs with bf16 instructions (changing
the logits by ~1e-2); ``precision='f32'`` (default here) pins fp32, so a deployed file reproduces the
PyTorch logits; ``precision='auto'`` keeps the plugin's choice. int8 models keep their int8 kernels
under either setting.
"""
import os

import numpy as np
import torch

from utils.errors import ConfigError

__all__ = ["RUNTIMES", "Runtime", "load_runtime", "check_artifact", "require_package", "numpy_batch"]

RUNTIMES = ("onnxruntime", "openvino")
_PIP = {"onnxruntime": "onnxruntime", "openvino": "openvino", "nncf": "nncf"}


def require_package(module):
    """Import a runtime package or raise ConfigError naming the pip command."""
    try:
        return __import__(module)
    except ImportError as e:
        raise ConfigError(f"the {module} package is not installed; run `pip install {_PIP[module]}` "
                          f"(it is in requirements.txt)") from e


def numpy_batch(x):
    """A float32 NCHW numpy batch from a tensor, an array or an (images, labels) pair."""
    if isinstance(x, (list, tuple)):       # (images, labels) batches from a loader
        x = x[0]
    if torch.is_tensor(x):
        x = x.detach().float().cpu().contiguous().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ConfigError(f"a runtime input must be a float32 NCHW batch, got shape {tuple(x.shape)}")
    return x


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
        x = numpy_batch(x)
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
        ort = require_package("onnxruntime")
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
    ov = require_package("openvino")
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
