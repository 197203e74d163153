"""Deploy suite: batch-1 latency of every model on every runtime, beside timm's rexnet_100.

    python benchmarks/deploy_suite.py [--quick] [--json PATH] [--models a,b] [--variants a,b] [--repeat 2]

Each model is exported once into ``--artifacts`` (ONNX, OpenVINO IR, NNCF int8 calibrated on random
images: the int8 rows time speed only), then every (model, runtime) pair is timed in a fresh subprocess
(``--in-process``: in this one), rounds alternating over all pairs; per round the ratio of each model's
best runtime to the peer's best. Runtimes: eager fused, torch.compile, onnxruntime, OpenVINO (fp32,
bf16, int8); ``--allocator auto`` is glibc, as for main.py's export and runtime commands.
"""
import argparse
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402
from deploy.compare import (PEER as PEER_TIMM, RUNTIME_VARIANTS, deploy_rows, format_deploy_table,  # noqa: E402
                            runtime_files, time_variant, write_runtime_files)
from deploy.forms import deployable  # noqa: E402
from utils.atomic_io import atomic_write  # noqa: E402

# model key -> (description, factory, input side); 'timm_rexnet_100' is the peer of every ratio
MODELS = {
    "timm_rexnet_100": ("timm rexnet_100 (peer)", "timm:rexnet_100", 224),
    "rexnet_1_0": ("ReXNet-1.0 (ours)", "rexnet_1_0", 224),
    "cdnv2_a": ("CondenseNetV2-A converted", "cdnv2_a", 224),
    "cdnv2_c": ("CondenseNetV2-C converted", "cdnv2_c", 224),
    "condensenet_86": ("CondenseNet-86 converted, 32x32", "condensenet_86", 32),
}
# --quick input sides; the CondenseNetV2s keep 224 (their head pool is 7x7)
QUICK_SIDE = {"timm_rexnet_100": 64, "rexnet_1_0": 64, "cdnv2_a": 224, "cdnv2_c": 224, "condensenet_86": 32}
VARIANTS = RUNTIME_VARIANTS     # eager, compiled, onnxruntime, openvino, openvino_bf16, openvino_int8
PEER = "timm_" + PEER_TIMM


def _model(key, quick=False):
    """(the deployable model in eval mode: converted, unfused; timm's peer as it is), input side, FLOPs."""
    import torch
    from graphs.models import create_model
    from graphs.flops import profile
    factory, res = MODELS[key][1], MODELS[key][2]
    res = QUICK_SIDE[key] if quick else res
    torch.manual_seed(0)
    if factory.startswith("timm:"):
        import timm
        model = timm.create_model(factory[5:]).eval()
        return model, res, profile(model, (3, res, res), rule="macs")[0]
    model = create_model(factory, **({"stages": (1, 1, 2, 2, 2)} if quick and key.startswith("cdnv2") else {}))
    model = deployable(model)
    return model, res, profile(model, (3, res, res))[0]


def prepare(key, folder, quick=False):
    """Write every runtime file of one model into ``folder``; returns its FLOPs."""
    model, res, flops = _model(key, quick)
    write_runtime_files(model, folder, key, (3, res, res), VARIANTS)
    return flops


def measure(key, variant, folder, threads=2, warmup=10, iters=50, quick=False):
    """Batch-1 latency (ms, median of ``iters``) of one model on one runtime, in this process."""
    model, res, _ = _model(key, quick)
    if variant in ("eager", "compiled") and not key.startswith("timm_"):    # timm's peer has no fused form
        model = deployable(model, fuse=True)
    times = time_variant(variant, model, runtime_files(folder, key, VARIANTS), (3, res, res), threads,
                         warmup, iters)
    return dict(model=key, variant=variant, ms=statistics.median(times), ms_min=min(times), threads=threads,
                peak_rss_mb=harness.peak_rss_mb())


def run(args):
    """The deployment table: every model x runtime, ``--repeat`` rounds, each round alternating over models
    and runtimes; the JSON is written after every round (a long run can be stopped with its rounds so far)."""
    from deploy.benchmark import write_json
    folder = args.artifacts or os.path.join(ROOT, "benchmarks", ".artifacts")
    os.makedirs(folder, exist_ok=True)
    keys = list(MODELS) if not args.models else [PEER] + [k for k in args.models.split(",") if k != PEER]
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        raise SystemExit(f"error: unknown models {unknown}; choose from {', '.join(MODELS)}")
    env, allocator = harness.allocator_env(args.allocator, deploy=True)
    flops = {}
    for key in keys:
        if args.reuse and os.path.isfile(os.path.join(folder, key + ".flops")):
            flops[key] = float(open(os.path.join(folder, key + ".flops")).read())
            continue
        r = harness.run_script(__file__, ["--prepare", key, folder] + (["--quick"] if args.quick else []), env)
        if "error" in r:
            raise SystemExit(f"error: exporting {key} failed: {r['error']}")
        flops[key] = float(r["flops"])
        atomic_write(os.path.join(folder, key + ".flops"), repr(flops[key]))
        print(f"exported {key}", file=sys.stderr, flush=True)
    variants = [v for v in VARIANTS if args.compile or v != "compiled"]
    if args.variants:
        variants = [v for v in args.variants.split(",") if v in variants]
    runs = {(k, v): [] for k in keys for v in variants}
    rows = []
    for rnd in range(args.repeat):
        for key in keys:
            for v in variants:
                if args.in_process:        # a busy machine: no start-up per measurement (no per-variant RSS)
                    kw = {k: getattr(args, k) for k in ("iters", "warmup") if getattr(args, k) is not None}
                    r = measure(key, v, folder, args.threads, quick=args.quick, **kw)
                else:
                    r = harness.run_script(__file__, ["--measure", key, v, folder] + harness.timing_args(args), env)
                runs[(key, v)].append(r.get("ms"))
        print(f"round {rnd + 1}/{args.repeat} done, load {harness.load_avg()}", file=sys.stderr, flush=True)
        rows = deploy_rows([(k, MODELS[k][0], flops[k]) for k in keys], variants, runs, rnd + 1, PEER)
        table = format_deploy_table(rows, variants)
        write_json(dict(deploy=rows, table=table, threads=args.threads, rounds=rnd + 1, cpu=harness.cpu_name(),
                        cpu_count=os.cpu_count(), torch_version=harness.torch_version(), allocator=allocator,
                        quick=args.quick, load_avg_1min_end=harness.load_avg()),
                   args.json or os.path.join(ROOT, "benchmarks", "results_deploy.json"))
    print(table)
    print(f"\n{harness.cpu_name()} ({os.cpu_count()} logical CPUs), torch {harness.torch_version()}, "
          f"threads {args.threads}, batch 1, {args.repeat} rounds, 1-min load average at end {harness.load_avg()}; "
          f"allocator {allocator}{'; QUICK (tiny settings)' if args.quick else ''}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (small inputs, shallow CondenseNetV2s)")
    ap.add_argument("--json", default=None, help="write the results here (default benchmarks/results_deploy.json)")
    ap.add_argument("--models", default=None, help=f"comma-separated subset of {', '.join(MODELS)}")
    ap.add_argument("--variants", default=None, help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--artifacts", default=None, help="folder for the exported files (default benchmarks/.artifacts)")
    ap.add_argument("--reuse", action="store_true", help="keep the exported files of an earlier run")
    ap.add_argument("--in-process", action="store_true", help="measure in this process (faster start)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="timed calls per measurement (default 50)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls per measurement (default 10)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds over every model and runtime")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile runtime")
    harness.add_allocator_arg(ap, "glibc, as main.py's export and runtime commands")
    ap.add_argument("--prepare", nargs=2, metavar=("MODEL", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--measure", nargs=3, metavar=("MODEL", "VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare:
        print(json.dumps(dict(flops=prepare(args.prepare[0], args.prepare[1], args.quick))))
    elif args.measure:
        key, variant, folder = args.measure
        kw = {k: getattr(args, k) for k in ("iters", "warmup") if getattr(args, k) is not None}
        print(json.dumps(measure(key, variant, folder, args.threads, quick=args.quick, **kw)))
    else:
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
