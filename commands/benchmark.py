"""``--mode benchmark``: latency, throughput, a training step, peak memory (CUDA) and params (counted as
``--mode flops`` does) of the training-time, the converted and the fused model, then batch-1 latency of
the deployable model on the ``benchmark_runtimes`` beside timm's ``rexnet_100`` on the same runtimes in
the same run; tables on stdout and ``out/benchmark.json``."""
import statistics

import torch

from deploy.benchmark import benchmark as measure, format_table, write_json
from deploy.compare import PEER, deploy_rows, format_deploy_table, time_variant, write_runtime_files
from deploy.forms import deployable, model_forms
from graphs.flops import profile
from utils.atomic_io import temporary_folder

from .common import input_size, load_if_available, out_path

ROUNDS = 3     # alternating rounds over models and runtimes: a busy machine's slow phases hit all alike


def benchmark(ctx) -> list:
    cfg = ctx.config
    load_if_available(ctx)
    n = cfg.benchmark_batch_size or cfg.batch_size
    amp = None if cfg.amp == "none" else cfg.amp
    size = input_size(ctx)
    ctx.model.set_memory_efficient(cfg.memory_efficient)    # the training step as training runs it
    rows = []
    for label, model in model_forms(ctx.model, cfg.prune_classifier):
        row = measure(model, size, device=ctx.device, batch_sizes=(1, n),
                      train_batch=n if label == "training-time" else None, channels_last=cfg.channels_last,
                      amp=amp, name=f"{cfg.model} ({label})")
        row["params"] = profile(model, size)[1]       # as --mode flops counts this form
        rows.append(row)
    print(format_table(rows))
    print("params: the papers' counting rule for each form, as --mode flops prints them (a training-time "
          "CondenseNet is charged its condensed weights)")
    result = {"config": cfg.exp_name, "rows": rows}
    if cfg.benchmark_runtimes:
        result["runtimes"] = runtime_rows(ctx, list(cfg.benchmark_runtimes))
    out = out_path(ctx, "benchmark.json")
    write_json(result, out)
    ctx.logger.info(f"wrote {out}")
    return rows


def runtime_rows(ctx, variants: list) -> dict:
    """Batch-1 CPU latency of the config's deployable model and of timm's ``rexnet_100`` (224 px) on each
    runtime variant, ``ROUNDS`` alternating rounds; the ratio column is best(model) / best(peer)."""
    import timm
    cfg = ctx.config
    threads = cfg.runtime_threads or torch.get_num_threads()
    size = input_size(ctx)
    ours = deployable(ctx.model, cfg.prune_classifier).cpu()
    peer = timm.create_model(PEER, pretrained=False).eval()
    models = {  # key -> (description, unfused deployable, eager model, input size, FLOPs)
        cfg.model: (f"{cfg.model} ({'converted' if ours.is_converted else 'deployable'})", ours,
                    deployable(ours, cfg.prune_classifier, fuse=True), size, profile(ours, size)[0]),
        PEER: (f"timm {PEER} (peer, 224 px)", peer, peer, (3, 224, 224),
               profile(peer, (3, 224, 224), rule="macs")[0]),
    }
    runs = {(k, v): [] for k in models for v in variants}
    with temporary_folder(ctx.dirs.out, "runtimes") as folder:
        files = {k: write_runtime_files(m[1], folder, k, m[3], variants) for k, m in models.items()}
        ctx.logger.info(f"timing {', '.join(variants)} for {cfg.model} and {PEER} ({threads} threads, batch 1, "
                        f"{ROUNDS} rounds)")
        for _ in range(ROUNDS):
            for key, (_, _, eager, shape, _) in models.items():
                for v in variants:
                    runs[(key, v)].append(statistics.median(time_variant(v, eager, files[key], shape, threads)))
    rows = deploy_rows([(k, m[0], m[4]) for k, m in models.items()], variants, runs, ROUNDS, PEER)
    table = format_deploy_table(rows, variants)
    print(f"\nbatch-1 latency, {threads} threads, median over {ROUNDS} rounds [min-max]; GFLOP/s = 2 x FLOPs / "
          f"latency; int8 calibrated on random images (speed only)\n{table}")
    return {"threads": threads, "rounds": ROUNDS, "rows": rows, "table": table}
