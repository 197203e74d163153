"""``--mode export``: the deployable model as ONNX (checked with onnxruntime), TorchScript, OpenVINO IR and
int8 (NNCF / onnxruntime static quantization), in ``out/``; ``out/export.json`` records every file, its
parity with PyTorch and, for the runtime formats, its top-1 on the validation split."""
from deploy.benchmark import write_json
from deploy.export import export_onnx, export_torchscript
from deploy.forms import deployable
from deploy.openvino import export_openvino, export_openvino_int8
from deploy.quantize import export_onnx_int8
from deploy.runtime import load_runtime
from engine.evaluator import evaluate
from graphs.layers.runtime import runtime_graph
from utils.errors import ConfigError

from .common import input_size, load_if_available, out_path

RUNTIME_FORMATS = ("onnx", "openvino", "openvino_int8", "onnx_int8")
FILES = {"onnx": "{}.onnx", "torchscript": "{}.torchscript.pt", "openvino": "{}.xml", "openvino_int8": "{}.int8.xml",
         "onnx_int8": "{}.int8.onnx"}


def export(ctx) -> dict:
    cfg = ctx.config
    load_if_available(ctx)
    model = deployable(ctx.model, cfg.prune_classifier).cpu()
    # the runtime form of a converted CondenseNet: BN folded, no gathers or scatters (same logits)
    graph = runtime_graph(model) if model.is_converted else model
    size, fmts = input_size(ctx), list(cfg.export_formats)
    path = {f: out_path(ctx, name.format(cfg.exp_name)) for f, name in FILES.items()}
    int8 = [f for f in fmts if f.endswith("_int8")]
    calibration = _calibration(ctx, size) if int8 else None     # read (and checked) before anything is written
    results = {}
    if any(f in fmts for f in RUNTIME_FORMATS):     # every runtime format starts from the checked ONNX file
        results["onnx"] = export_onnx(graph, path["onnx"], size)
    if "torchscript" in fmts:
        results["torchscript"] = export_torchscript(model, path["torchscript"], size)
    if "openvino" in fmts:
        results["openvino"] = export_openvino(graph, path["openvino"], size, onnx_path=path["onnx"])
    if int8:
        if "openvino_int8" in int8:
            results["openvino_int8"] = export_openvino_int8(graph, path["openvino_int8"], calibration, size,
                                                            onnx_path=path["onnx"])
        if "onnx_int8" in int8:
            results["onnx_int8"] = export_onnx_int8(path["onnx"], path["onnx_int8"], calibration)
        val = ctx.loaders[1]
        for fmt in ["onnx" if "onnx" in fmts else None, "openvino" if "openvino" in fmts else None, *int8]:
            if fmt is not None:        # the deployed file's accuracy on real data, fp32 beside int8
                rt = load_runtime(path[fmt], threads=cfg.runtime_threads or None, precision=cfg.runtime_precision)
                stats = evaluate(model, val, ctx.device, ctx.dist, ctx.num_classes,
                                 forward=lambda x: rt(x.cpu()).to(x.device))
                results[fmt]["val_top1"] = stats["top1"]
                ctx.logger.info(f"{fmt}: top-1 {stats['top1']:.2f}% on {stats['count']} validation images")
    for fmt, res in results.items():
        diff = res.get("max_abs_diff")
        ctx.logger.info(f"wrote {res.get('path', path[fmt])} ({fmt})"
                        + (f"; max |difference| to PyTorch {diff:.2e}" if diff is not None else ""))
    write_json(results, out_path(ctx, "export.json"))
    return results


def _calibration(ctx, size) -> list:
    """The int8 calibration batches: training images through the eval transform, at the export size."""
    from datasets import calibration_loader
    train, val = ctx.loaders
    batches = [x.cpu() for x, _ in calibration_loader(train, val, ctx.config.calibration_size)]
    got = tuple(batches[0].shape[-2:])
    if got != tuple(size[-2:]):
        raise ConfigError(f"the int8 formats calibrate on the training images, which are {got[0]}x{got[1]}, but "
                          f"the model is exported for {size[-2]}x{size[-1]} inputs; set input_size to the images' "
                          f"size (a checkpoint trained on them records it)")
    return batches
