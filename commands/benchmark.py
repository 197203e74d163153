"""``--mode benchmark``: latency, throughput, a training step and peak memory of the training-time, the
converted and the fused model; a table on stdout and ``out/benchmark.json``."""
from utils.benchmark import benchmark as measure, format_table, write_json

from .common import input_size, load_if_available, out_path
from .deploy import deployable


def benchmark(ctx) -> list:
    cfg = ctx.config
    load_if_available(ctx)
    n = cfg.benchmark_batch_size or cfg.batch_size
    amp = None if cfg.amp == "none" else cfg.amp
    candidates = [("training-time", ctx.model)]
    if ctx.model.supports("convert"):
        candidates.append(("converted", deployable(ctx.model, cfg.prune_classifier)))
    if candidates[-1][1].supports("fuse"):      # inference-only form: BN folded, dense blocks in one buffer
        candidates.append(("fused", deployable(candidates[-1][1], cfg.prune_classifier, fuse=True)))
    rows = [measure(model, input_size(ctx), device=ctx.device, batch_sizes=(1, n),
                    train_batch=n if label == "training-time" else None, channels_last=cfg.channels_last,
                    amp=amp, name=f"{cfg.model} ({label})") for label, model in candidates]
    print(format_table(rows))
    out = out_path(ctx, "benchmark.json")
    write_json({"config": cfg.exp_name, "rows": rows}, out)
    ctx.logger.info(f"wrote {out}")
    return rows
