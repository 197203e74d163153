"""int8 post-training quantization: the calibration batches, onnxruntime's static quantization of an ONNX
file (QDQ form, :func:`export_onnx_int8`), and the quantizers' known noise (:func:`quiet_known_noise`);
the OpenVINO int8 writer is ``deploy.openvino.export_openvino_int8``.

Quantizing runs under :func:`quiet_known_noise`: the third-party log lines listed in ``KNOWN_NOISE`` are
dropped (every other warning still shows) and NNCF's progress bars go to stderr with the project's.
"""
import contextlib
import logging
import os
import re
import sys
import tempfile

from utils.atomic_io import atomic_path
from utils.errors import ConfigError

from .runtime import numpy_batch, require_package

__all__ = ["calibration_batches", "export_onnx_int8", "quiet_known_noise", "KNOWN_NOISE"]


def calibration_batches(calibration, what):
    """The calibration iterable as a list of float32 NCHW numpy batches; ConfigError when empty/None."""
    if calibration is None:
        raise ConfigError(f"{what} needs calibration data: pass a few hundred training images with the eval "
                          f"transform (the export command uses calibration_size training images)")
    batches = [numpy_batch(b) for b in calibration]
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


def export_onnx_int8(onnx_path, path, calibration, per_channel=True):
    """onnxruntime static int8 quantization (QDQ, per-channel weights) of the fp32 ONNX file
    ``onnx_path``, calibrated on ``calibration`` (see ``deploy.openvino.export_openvino_int8``), written at ``path``.

    Returns ``{'path', 'calibration_images'}``."""
    require_package("onnxruntime")
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
