"""A deployable model on every runtime side by side: the files each runtime variant runs, their batch-1
latency and the table against timm's ``rexnet_100`` (``--mode benchmark``'s runtime rows and
``benchmarks/deploy_suite.py``)."""
import os
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from utils.config import SCHEMA_BY_NAME

from .forms import export_graph
from .timing import time_calls

__all__ = ["RUNTIME_VARIANTS", "PEER", "runtime_files", "write_runtime_files", "time_variant", "deploy_rows",
           "format_deploy_table"]

# eager / compiled: the fused PyTorch model (compiled: torch.compile, inductor with frozen weights);
# openvino pins fp32, openvino_bf16 is the CPU plugin's default (bf16 where the CPU has it)
RUNTIME_VARIANTS = SCHEMA_BY_NAME["benchmark_runtimes"].choices    # written once, in configs/schema.json
PEER = "rexnet_100"        # timm's ReXNet-1.0: the peer every runtime table compares against
_FILE = {"onnxruntime": ".onnx", "openvino": ".xml", "openvino_bf16": ".xml", "openvino_int8": ".int8.xml"}


def runtime_files(folder: str, name: str, variants: Sequence[str]) -> Dict[str, str]:
    """variant -> the file :func:`write_runtime_files` writes for it (runtime variants only)."""
    return {v: os.path.join(folder, name + _FILE[v]) for v in variants if v in _FILE}


def write_runtime_files(model: nn.Module, folder: str, name: str, input_size: Tuple[int, int, int],
                        variants: Sequence[str], calibration=None, graph: Optional[nn.Module] = None) -> Dict[str, str]:
    """Export ``model`` (deployable, unfused) for the runtime ``variants`` into ``folder``; returns
    variant -> file. ``calibration`` (float32 NCHW batches) calibrates int8; None: 64 random images,
    which times speed only. ``graph``: the module to export instead of :func:`export_graph`'s."""
    from .export import export_onnx
    from .openvino import export_openvino, export_openvino_int8
    graph, files = graph or export_graph(model), runtime_files(folder, name, variants)
    wanted = set(files)
    onnx = os.path.join(folder, name + ".onnx")
    if wanted:
        export_onnx(graph, onnx, input_size)
    if wanted & {"openvino", "openvino_bf16"}:
        export_openvino(graph, files.get("openvino") or files["openvino_bf16"], input_size, onnx_path=onnx)
    if "openvino_int8" in wanted:
        if calibration is None:
            rng = np.random.default_rng(0)
            calibration = [rng.standard_normal((1, *input_size)).astype(np.float32) for _ in range(64)]
        export_openvino_int8(graph, files["openvino_int8"], calibration, input_size, onnx_path=onnx)
    return files


def time_variant(variant: str, eager: Optional[nn.Module], files: Dict[str, str], input_size, threads: int,
                 warmup: int = 5, iters: int = 30) -> List[float]:
    """Batch-1 latencies (ms) of one variant: ``eager`` is the fused PyTorch model (also what
    ``compiled`` compiles), ``files`` what :func:`write_runtime_files` wrote."""
    x = torch.randn(1, *input_size, generator=torch.Generator().manual_seed(0))
    if variant in ("eager", "compiled"):
        torch.set_num_threads(threads)
        model = eager
        if variant == "compiled":
            import torch._inductor.config as inductor_config
            with inductor_config.patch(freezing=True), torch.inference_mode():   # weights prepacked
                model = torch.compile(eager)
                model(x)
        with torch.inference_mode():
            return time_calls(lambda: model(x), warmup, iters)
    from .runtime import load_runtime
    rt = load_runtime(files[variant], "onnxruntime" if variant == "onnxruntime" else "openvino", threads=threads,
                      precision="f32" if variant == "openvino" else "auto", batch=1)
    xn = x.numpy()
    return time_calls(lambda: rt.run_array(xn), warmup, iters)


def deploy_rows(models: Sequence[Tuple[str, str, float]], variants: Sequence[str], runs: dict, rounds: int,
                peer: str) -> List[dict]:
    """Table rows from ``runs[(key, variant)]`` = one median ms per round (None: failed): per runtime the
    median [min-max] over rounds; per round best(model) / best(peer), median [min-max].
    ``models``: (key, description, FLOPs) in table order."""
    rows = []
    for key, desc, flops in models:
        row = dict(model=key, description=desc, flops=flops, variants={})
        for v in variants:
            ms = [t for t in runs[(key, v)] if t is not None]
            row["variants"][v] = dict(runs_ms=runs[(key, v)], ms=statistics.median(ms) if ms else None,
                                      ms_lo=min(ms) if ms else None, ms_hi=max(ms) if ms else None)
        rows.append(row)

    def best(key, rnd):
        vals = [(runs[(key, v)][rnd], v) for v in variants if runs[(key, v)][rnd] is not None]
        return min(vals) if vals else (None, None)
    for row in rows:
        ratios = []
        for rnd in range(rounds):
            (m, _), (p, _) = best(row["model"], rnd), best(peer, rnd)
            if m is not None and p is not None:
                ratios.append(m / p)
        bests = [b for b in (best(row["model"], rnd)[1] for rnd in range(rounds)) if b]
        row.update(ratio=statistics.median(ratios) if ratios else None, ratio_lo=min(ratios) if ratios else None,
                   ratio_hi=max(ratios) if ratios else None, ratios=ratios,
                   best_variant=max(set(bests), key=bests.count) if bests else None)
    return rows


def format_deploy_table(rows: List[dict], variants: Sequence[str]) -> str:
    """Markdown: per model and runtime the median ms [spread] and achieved GFLOP/s (2 x multiply-adds)."""
    head = "| model | FLOPs | " + " | ".join(variants) + " | best / peer best (median [spread]) |"
    lines = [head, "|---|---:|" + "---:|" * len(variants) + "---:|"]
    for r in rows:
        cells = []
        for v in variants:
            d = r["variants"][v]
            if d["ms"] is None:
                cells.append("error")
                continue
            gflops = 2.0 * r["flops"] / (d["ms"] * 1e-3) / 1e9
            cells.append(f"{d['ms']:.2f} ms [{d['ms_lo']:.2f}-{d['ms_hi']:.2f}], {gflops:.0f} GFLOP/s")
        ratio = "-" if r["ratio"] is None else \
            f"{r['ratio']:.2f}x [{r['ratio_lo']:.2f}-{r['ratio_hi']:.2f}] ({r['best_variant']})"
        lines.append(f"| {r['description']} | {r['flops'] / 1e6:.0f} M | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)
