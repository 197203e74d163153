"""``--mode export``: ONNX (checked with onnxruntime) and TorchScript of the deployable model, in ``out/``."""
from utils.export import export_onnx, export_torchscript

from .common import input_size, load_if_available, out_path
from .deploy import deployable

WRITERS = {"onnx": ("onnx", export_onnx), "torchscript": ("torchscript.pt", export_torchscript)}


def export(ctx) -> dict:
    load_if_available(ctx)
    model = deployable(ctx.model, ctx.config.prune_classifier).cpu()
    results = {}
    for fmt in ctx.config.export_formats:
        suffix, writer = WRITERS[fmt]
        path = out_path(ctx, f"{ctx.config.exp_name}.{suffix}")
        results[fmt] = writer(model, path, input_size(ctx))
        ctx.logger.info(f"wrote {path} ({fmt}); max |difference| to PyTorch {results[fmt]['max_abs_diff']:.2e}")
    return results
