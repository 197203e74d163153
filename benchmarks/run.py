"""Performance suite for issue 6: one command, a markdown table and a JSON file.

    python benchmarks/run.py [--quick] [--json PATH] [--rows a,b,...] [--threads 2] [--repeat 2]

Every row measures one workload twice, in the same run: ``baseline`` (the unoptimised path of the same
model: masked-dense training with memory_efficient off in NCHW; the un-fused converted model) and
``optimized`` (memory_efficient on + channels_last for training; ``fuse()`` for converted inference;
for ReXNet timm's ``rexnet_100`` is the baseline, trained channels_last like ours). Each variant runs
in a fresh subprocess so that its peak RSS (``ru_maxrss``, whole process: torch, model, activations,
allocator caching) is honest; the table gives images/s (training) or ms (batch-1 latency), peak RSS
and the speed ratio optimized / baseline. Inference rows have a third variant, ``compiled``: the optimized model through
``torch.compile`` (inductor with ``freezing``: weights prepacked for oneDNN, elementwise chains fused),
with its one-off compile time in the JSON. Each variant is measured ``--repeat`` times (default 2),
alternating with the others, and its fastest median is kept: a shared machine's slow phases then hit
every variant alike. ``--quick`` uses tiny models/inputs, 1 timed iteration, no compile, in-process
(for the tests).

All subprocesses run on the same C allocator: the one ``run.sh`` and ``main.py`` use (tcmalloc where the
system has it, else the mimalloc that requirements.txt installs); ``--allocator`` picks another (``glibc-mmap`` = glibc with ``MALLOC_MMAP_THRESHOLD_=131072``,
low memory but a page fault per buffer). The allocator is part of the measurement: see
benchmarks/README.md.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from commands.deploy import (PEER as PEER_TIMM, RUNTIME_VARIANTS, deploy_rows, deployable,  # noqa: E402
                             format_deploy_table, latencies_ms, runtime_files, time_variant,
                             write_runtime_files)
from utils.atomic_io import atomic_write  # noqa: E402

# name -> (description, kind, settings); kind 'train' (img/s) or 'infer' (ms at batch 1)
ROWS = {
    "cnet86_train_pre": ("CondenseNet-86 CIFAR training step b64, before the last pruning event", "train",
                         dict(model="condensenet_86", progress=0.3, batch=64, res=32,
                              quick=dict(model="condensenet_50", batch=4))),
    "cnet86_train_post": ("CondenseNet-86 CIFAR training step b64, after the last pruning event", "train",
                          dict(model="condensenet_86", progress=1.0, batch=64, res=32,
                               quick=dict(model="condensenet_50", batch=4))),
    "cnet86_converted": ("CondenseNet-86 converted, batch 1, 32x32", "infer",
                         dict(model="condensenet_86", res=32, quick=dict(model="condensenet_50"))),
    "cdnv2a_converted": ("CondenseNetV2-A converted, batch 1, 224x224", "infer",
                         dict(model="cdnv2_a", res=224, quick=dict(model="cdnv2_110", res=32,
                                                                   kwargs=dict(stages=(2, 2, 2))))),
    "cdnv2c_converted": ("CondenseNetV2-C converted, batch 1, 224x224", "infer",
                         dict(model="cdnv2_c", res=224, quick=dict(model="cdnv2_110", res=32,
                                                                   kwargs=dict(stages=(2, 2, 2))))),
    "cdnv2c_unconverted": ("CondenseNetV2-C unconverted (eval), batch 1, 224x224 (baseline: same, unfused)",
                           "infer", dict(model="cdnv2_c", res=224, unconverted=True,
                                         quick=dict(model="cdnv2_110", res=32, kwargs=dict(stages=(2, 2, 2))))),
    "cdnv2c_train": ("CondenseNetV2-C training step b16, 224x224", "train",
                     dict(model="cdnv2_c", progress=0.3, batch=16, res=224,
                          quick=dict(model="cdnv2_110", batch=4, res=32, kwargs=dict(stages=(2, 2, 2))))),
    "densenet100_train": ("DenseNet-BC-100 CIFAR training step b64", "train",
                          dict(model="densenet_bc_100", progress=None, batch=64, res=32,
                               quick=dict(batch=4, kwargs=dict(stages=(2, 2, 2))))),
    "rexnet_latency": ("ReXNet-1.0 batch 1, 224x224 (baseline: timm rexnet_100)", "infer",
                       dict(model="rexnet_1_0", res=224, timm="rexnet_100", quick=dict(res=64))),
    "cifar_loader": ("CIFAR-10 loading + train augmentation (4-pixel pad crop, flip, normalise), b64, 1 thread "
                     "(baseline: torchvision transforms per image)", "loader",
                     dict(images=10000, quick=dict(images=256))),
    "rexnet_train": ("ReXNet-1.0 training step b16, 224x224 (baseline: timm rexnet_100; both channels_last)", "train",
                     dict(model="rexnet_1_0", batch=16, res=224, timm="rexnet_100", quick=dict(batch=2, res=64))),
}


VARIANTS = {"train": ("baseline", "optimized"), "infer": ("baseline", "optimized", "compiled"),
            "loader": ("baseline", "optimized")}


def _settings(row, quick):
    s = dict(ROWS[row][2])
    q = s.pop("quick", {})
    if quick:
        s.update(q)
    s.setdefault("kwargs", {})
    return s


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _time(fn, warmup, iters):
    times = latencies_ms(fn, warmup, iters)
    return statistics.median(times), times


def measure(row, variant, quick=False, threads=2, warmup=None, iters=None, profile=False):
    """Measure one (row, variant) in this process; returns a JSON-ready dict. ``profile`` also prints
    torch.profiler's top operators (by self CPU time, grouped by input shapes) to stderr."""
    import torch
    import torch.nn.functional as F
    from graphs.models import create_model

    torch.set_num_threads(threads)
    desc, kind, s = ROWS[row][0], ROWS[row][1], _settings(row, quick)
    warmup = (0 if quick else {"train": 2, "infer": 5, "loader": 1}[kind]) if warmup is None else warmup
    iters = (1 if quick else {"train": 5, "infer": 30, "loader": 3}[kind]) if iters is None else iters
    if kind == "loader":
        return _measure_loader(row, variant, s, warmup, iters, quick, profile)
    optimized = variant in ("optimized", "compiled")
    torch.manual_seed(0)
    if s.get("timm") and not optimized:
        import timm
        model = timm.create_model(s["timm"], num_classes=1000)
        label = f"timm {s['timm']}"
    else:
        model = create_model(s["model"], **s["kwargs"])
        label = s["model"]
    num_classes = 10        # every benchmarked model has at least 10 classes
    res = s["res"]
    gen = torch.Generator().manual_seed(0)
    out = dict(row=row, description=desc, variant=variant, model=label, kind=kind, threads=threads,
               torch_version=torch.__version__, warmup=warmup, iters=iters, quick=quick)
    if kind == "train":
        batch = s["batch"]
        own = not (s.get("timm") and not optimized)
        if s.get("progress") and own:
            model.set_progress(s["progress"])
        cl = optimized or bool(s.get("timm"))   # the timm peer trains like for like (channels_last too)
        if own:
            model.set_memory_efficient(optimized)
        model.train()
        x = torch.randn(batch, 3, res, res, generator=gen)
        y = torch.randint(0, num_classes, (batch,), generator=gen)
        if cl:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        med, times = _time(step, warmup, iters)
        fn = step
        out.update(batch=batch, input=[3, res, res], ms=med, img_s=batch * 1000.0 / med,
                   memory_efficient=optimized and own and model.supports("memory_efficient"), channels_last=cl,
                   progress=s.get("progress"))
    else:
        if s.get("timm") and not optimized:
            model.eval()
        elif s.get("unconverted"):
            model.set_progress(1.0)
            model = model.fuse() if optimized else model.eval()     # fuse() converts a training-time model
        else:
            model = deployable(model, fuse=optimized)
        x = torch.randn(1, 3, res, res, generator=gen)
        if variant == "compiled":
            import torch._inductor.config as inductor_config
            inductor_config.freezing = True          # weights become constants: prepacked, BN-folded
            model = torch.compile(model)
            t0 = time.perf_counter()
            with torch.inference_mode():
                model(x)
            out.update(compile_s=time.perf_counter() - t0)
        with torch.inference_mode():
            med, times = _time(lambda: model(x), warmup, iters)

        def fn():
            with torch.inference_mode():
                model(x)
        out.update(batch=1, input=[3, res, res], ms=med, img_s=1000.0 / med, fused=optimized,
                   compiled=variant == "compiled", converted=bool(getattr(model, "is_converted", False)))  # timm's peer has no such flag
    if profile:
        _print_profile(fn)
    from utils.allocator import active_allocator
    out.update(ms_min=min(times), peak_rss_mb=_peak_rss_mb(), allocator=active_allocator())
    return out


def _measure_loader(row, variant, s, warmup, iters, quick, profile=False):
    """One pass over ``images`` random uint8 CIFAR-sized images with the training augmentation, 1 thread."""
    import torch
    from datasets.cifar import MEAN, STD
    torch.set_num_threads(1)
    n, batch = s["images"], 64
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    mean, std = MEAN["cifar10"], STD["cifar10"]
    if variant == "optimized":
        from datasets.loader import InMemoryLoader
        loader = InMemoryLoader(images, labels, [str(i) for i in range(10)], batch_size=batch, train=True,
                                device="cpu", mean=mean, std=std, crop_padding=4, hflip=0.5)
    else:                      # the official pipeline: torchvision's CIFAR10 + per-image transforms
        import torchvision.transforms as T
        from PIL import Image
        arrays = images.permute(0, 2, 3, 1).numpy()
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return n

            def __getitem__(self, i):
                return tf(Image.fromarray(arrays[i])), int(labels[i])
        loader = torch.utils.data.DataLoader(Data(), batch_size=batch, shuffle=True, num_workers=0)

    def one_pass():
        for x, y in loader:
            pass
    med, times = _time(one_pass, warmup, iters)
    if profile:
        _print_profile(one_pass, calls=1)
    from utils.allocator import active_allocator
    return dict(row=row, description=ROWS[row][0], variant=variant, kind="loader", threads=1, images=n, batch=batch,
                torch_version=torch.__version__, warmup=warmup, iters=iters, quick=quick, ms=med,
                img_s=n * 1000.0 / med, ms_min=min(times), peak_rss_mb=_peak_rss_mb(), allocator=active_allocator())


def _print_profile(fn, calls=3, rows=20):
    from torch.profiler import profile
    with profile(record_shapes=True) as prof:
        for _ in range(calls):
            fn()
    averages = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    print(f"top operators over {calls} call(s) (share of self CPU time):", file=sys.stderr)
    for e in sorted(averages, key=lambda e: -e.self_cpu_time_total)[:rows]:
        print(f"  {e.key:40s} {100.0 * e.self_cpu_time_total / total:5.1f} %  {e.count // calls:5d} calls/iter",
              file=sys.stderr)
    print("by input shapes:", file=sys.stderr)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=rows,
                                                             max_name_column_width=28, max_shapes_column_width=60),
          file=sys.stderr)


# ------------------------------------------------------------------------------------ deployment runtimes
# model key -> (description, factory, input side); 'timm_rexnet_100' is the peer of every ratio
DEPLOY_MODELS = {
    "timm_rexnet_100": ("timm rexnet_100 (peer)", "timm:rexnet_100", 224),
    "rexnet_1_0": ("ReXNet-1.0 (ours)", "rexnet_1_0", 224),
    "cdnv2_a": ("CondenseNetV2-A converted", "cdnv2_a", 224),
    "cdnv2_c": ("CondenseNetV2-C converted", "cdnv2_c", 224),
    "condensenet_86": ("CondenseNet-86 converted, 32x32", "condensenet_86", 32),
}
DEPLOY_QUICK = {"timm_rexnet_100": 64, "rexnet_1_0": 64, "cdnv2_a": 224, "cdnv2_c": 224, "condensenet_86": 32}  # v2: 7x7 head pool
DEPLOY_VARIANTS = RUNTIME_VARIANTS     # commands/deploy.py: eager, compiled, onnxruntime, openvino, openvino_bf16, openvino_int8
PEER = "timm_" + PEER_TIMM


def _deploy_model(key, quick=False):
    """(the deployable model in eval mode: converted, unfused; timm's peer as it is), input side, FLOPs."""
    import torch
    from graphs.models import create_model
    from graphs.flops import profile
    factory, res = DEPLOY_MODELS[key][1], DEPLOY_MODELS[key][2]
    res = DEPLOY_QUICK[key] if quick else res
    torch.manual_seed(0)
    if factory.startswith("timm:"):
        import timm
        model = timm.create_model(factory[5:]).eval()
        return model, res, profile(model, (3, res, res), rule="macs")[0]
    model = create_model(factory, **({"stages": (1, 1, 2, 2, 2)} if quick and key.startswith("cdnv2") else {}))
    model = deployable(model)
    return model, res, profile(model, (3, res, res))[0]


def _prepare_deploy(key, folder, quick=False):
    """Write every runtime file of one model into ``folder`` (int8 calibrated on random images: speed
    only); returns the FLOPs."""
    model, res, flops = _deploy_model(key, quick)
    write_runtime_files(model, folder, key, (3, res, res), DEPLOY_VARIANTS)
    return flops


def measure_deploy(key, variant, folder, threads=2, warmup=10, iters=50, quick=False):
    """Batch-1 latency (ms, median of ``iters``) of one model on one runtime, in this process."""
    model, res, _ = _deploy_model(key, quick)
    if variant in ("eager", "compiled") and not key.startswith("timm_"):    # timm's peer has no fused form
        model = deployable(model, fuse=True)
    times = time_variant(variant, model, runtime_files(folder, key, DEPLOY_VARIANTS), (3, res, res), threads,
                         warmup, iters)
    return dict(model=key, variant=variant, ms=statistics.median(times), ms_min=min(times), threads=threads,
                peak_rss_mb=_peak_rss_mb())


def run_deploy(args):
    """The deployment table: every model x runtime in fresh subprocesses, ``--repeat`` rounds, each round
    alternating over models and runtimes; per round the ratio best(model) / best(peer)."""
    folder = args.artifacts or os.path.join(ROOT, "benchmarks", ".artifacts")
    os.makedirs(folder, exist_ok=True)
    keys = list(DEPLOY_MODELS) if not args.models else [PEER] + [k for k in args.models.split(",") if k != PEER]
    unknown = [k for k in keys if k not in DEPLOY_MODELS]
    if unknown:
        raise SystemExit(f"error: unknown models {unknown}; choose from {', '.join(DEPLOY_MODELS)}")
    env, allocator = _allocator_env(args.allocator, deploy=True)
    flops = {}
    for key in keys:
        if args.reuse and os.path.isfile(os.path.join(folder, key + ".flops")):
            flops[key] = float(open(os.path.join(folder, key + ".flops")).read())
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--prepare-deploy", key, folder] + (["--quick"] if args.quick else [])
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"error: exporting {key} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
        flops[key] = float(p.stdout.strip().splitlines()[-1])
        atomic_write(os.path.join(folder, key + ".flops"), repr(flops[key]))
        print(f"exported {key}", file=sys.stderr, flush=True)
    variants = [v for v in DEPLOY_VARIANTS if args.compile or v != "compiled"]
    if args.variants:
        variants = [v for v in args.variants.split(",") if v in variants]
    runs = {(k, v): [] for k in keys for v in variants}
    rows = []
    for rnd in range(args.repeat):
        for key in keys:
            for v in variants:
                cmd = [sys.executable, os.path.abspath(__file__), "--measure-deploy", key, v, folder,
                       "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
                for flag in ("iters", "warmup"):
                    if getattr(args, flag) is not None:
                        cmd += [f"--{flag}", str(getattr(args, flag))]
                if args.in_process:        # a busy machine: no start-up per measurement (no per-variant RSS)
                    kw = {k: getattr(args, k) for k in ("iters", "warmup") if getattr(args, k) is not None}
                    r = measure_deploy(key, v, folder, args.threads, quick=args.quick, **kw)
                else:
                    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                    r = (json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else
                         dict(error=(p.stderr or p.stdout).strip().splitlines()[-1:]))
                runs[(key, v)].append(r.get("ms"))
        print(f"round {rnd + 1}/{args.repeat} done, load {_load_avg()}", file=sys.stderr, flush=True)
        rows = deploy_rows([(k, DEPLOY_MODELS[k][0], flops[k]) for k in keys], variants, runs, rnd + 1, PEER)
        table = format_deploy_table(rows, variants)
        # written after every round: a long run on a busy machine can be stopped with its rounds so far
        from utils.benchmark import write_json
        write_json(dict(deploy=rows, table=table, threads=args.threads, rounds=rnd + 1, cpu=_cpu_name(),
                        cpu_count=os.cpu_count(), torch_version=_torch_version(), allocator=allocator,
                        quick=args.quick, load_avg_1min_end=_load_avg()),
                   args.json or os.path.join(ROOT, "benchmarks", "results_deploy.json"))
    print(table)
    print(f"\n{_cpu_name()} ({os.cpu_count()} logical CPUs), torch {_torch_version()}, threads {args.threads}, "
          f"batch 1, {args.repeat} rounds, 1-min load average at end {_load_avg()}; allocator {allocator}"
          f"{'; QUICK (tiny settings)' if args.quick else ''}")
    return rows


def _allocator_env(choice, deploy=False):
    """(environment for the measuring subprocesses, allocator label). ``deploy``: 'auto' is glibc, as for
    main.py's export and runtime commands (OpenVINO aborts under a preloaded malloc)."""
    from utils.allocator import find_allocator, find_tcmalloc
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_MMAP_THRESHOLD_")}
    lib = find_tcmalloc()
    if choice == "tcmalloc" and not lib:
        raise SystemExit("error: --allocator tcmalloc: no tcmalloc found; install it (Debian/Ubuntu: "
                         "apt install libtcmalloc-minimal4) or pick --allocator glibc")
    if choice == "auto" and find_allocator() and not deploy:      # what main.py trains on
        env["LD_PRELOAD"] = find_allocator()
        return env, f"{'tcmalloc' if lib else 'mimalloc'} ({env['LD_PRELOAD']})"
    if choice == "tcmalloc":
        env["LD_PRELOAD"] = lib
        return env, f"tcmalloc ({lib})"
    if choice == "mimalloc":
        from utils.allocator import find_mimalloc
        lib = find_mimalloc()
        if not lib:
            raise SystemExit("error: --allocator mimalloc: pip install cmeel-mimalloc")
        env["LD_PRELOAD"] = lib
        return env, f"mimalloc ({lib})"
    if choice == "glibc-mmap":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        return env, "glibc, MALLOC_MMAP_THRESHOLD_=131072"
    return env, "glibc"


def _cpu_name():
    import torch
    from utils.benchmark import device_name
    return device_name(torch.device("cpu"))


def _torch_version():
    import torch
    return torch.__version__


def _load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _run_sub(row, variant, args, env):
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", row, variant, "--threads", str(args.threads)]
    if args.quick:
        cmd.append("--quick")
    for flag in ("iters", "warmup"):
        if getattr(args, flag) is not None:
            cmd += [f"--{flag}", str(getattr(args, flag))]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        return dict(row=row, variant=variant, error=(p.stderr or p.stdout).strip().splitlines()[-1:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def format_table(rows):
    lines = ["| workload | baseline | optimized | speed ratio | torch.compile (ratio) | "
             "baseline peak RSS (MB) | optimized peak RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b, o, c = r.get("baseline") or {}, r.get("optimized") or {}, r.get("compiled") or {}
        if "error" in b or "error" in o or not b or not o:
            lines.append(f"| {r['description']} | error | error | - | - | - | - |")
            continue
        if r["kind"] == "loader":
            cell = lambda d: f"{d['img_s']:.0f} img/s"  # noqa: E731
        elif r["kind"] == "train":
            cell = lambda d: f"{d['img_s']:.1f} img/s"  # noqa: E731
        else:
            cell = lambda d: f"{d['ms']:.2f} ms"  # noqa: E731
        comp = f"{cell(c)} ({r['compiled_ratio']:.2f}x)" if "ms" in c else ("error" if c else "-")
        lines.append(f"| {r['description']} | {cell(b)} | {cell(o)} | {r['speed_ratio']:.2f}x | {comp} | "
                     f"{b['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings, 1 iteration, in-process")
    ap.add_argument("--json", default=None, help="write the results here (default benchmarks/results.json)")
    ap.add_argument("--rows", default=None, help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 5 train / 30 infer)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 2 train / 5 infer)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure each variant this many times, alternating, and keep the fastest median")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the torch.compile variant of the inference rows")
    ap.add_argument("--allocator", choices=("auto", "tcmalloc", "mimalloc", "glibc", "glibc-mmap"), default="auto",
                    help="C allocator of the measuring subprocesses (auto: what run.sh and main.py use: tcmalloc "
                         "if installed, else the pip-installed mimalloc)")
    ap.add_argument("--profile", nargs=2, metavar=("ROW", "VARIANT"),
                    help="measure one variant of one row in this process and print its top operators")
    ap.add_argument("--measure", nargs=2, metavar=("ROW", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--deploy", action="store_true",
                    help="the deployment table instead: eager fused, torch.compile, onnxruntime, OpenVINO, OpenVINO "
                         "int8 per model, batch 1, with timm rexnet_100 as the peer")
    ap.add_argument("--models", default=None, help=f"--deploy: comma-separated subset of {', '.join(DEPLOY_MODELS)}")
    ap.add_argument("--artifacts", default=None, help="--deploy: folder for the exported files "
                                                       "(default benchmarks/.artifacts)")
    ap.add_argument("--variants", default=None, help=f"--deploy: comma-separated subset of {', '.join(DEPLOY_VARIANTS)}")
    ap.add_argument("--in-process", action="store_true", help="--deploy: measure in this process (faster start)")
    ap.add_argument("--reuse", action="store_true", help="--deploy: keep the exported files of an earlier run")
    ap.add_argument("--prepare-deploy", nargs=2, metavar=("MODEL", "FOLDER"), help=argparse.SUPPRESS)
    ap.add_argument("--measure-deploy", nargs=3, metavar=("MODEL", "VARIANT", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare_deploy:
        print(_prepare_deploy(args.prepare_deploy[0], args.prepare_deploy[1], args.quick))
        return 0
    if args.measure_deploy:
        key, variant, folder = args.measure_deploy
        kw = {k: getattr(args, k) for k in ("iters", "warmup") if getattr(args, k) is not None}
        print(json.dumps(measure_deploy(key, variant, folder, args.threads, quick=args.quick, **kw)))
        return 0
    if args.deploy:
        run_deploy(args)
        return 0
    one = args.measure or args.profile
    if one:
        if one[0] not in ROWS or one[1] not in VARIANTS[ROWS[one[0]][1]]:
            ap.error(f"unknown row/variant {one}; rows: {', '.join(ROWS)}; variants: baseline, optimized, "
                     f"compiled (inference rows)")
        print(json.dumps(measure(one[0], one[1], args.quick, args.threads, args.warmup, args.iters,
                                 profile=bool(args.profile))))
        return 0
    rows = list(ROWS) if not args.rows else [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    env, allocator = _allocator_env(args.allocator)
    results = []
    for row in rows:
        entry = dict(row=row, description=ROWS[row][0], kind=ROWS[row][1], load_avg_1min=_load_avg())
        variants = VARIANTS[entry["kind"]] if args.compile and not args.quick else ("baseline", "optimized")
        for variant in variants:
            entry[variant] = None
        for _ in range(1 if args.quick else args.repeat):
            for variant in variants:           # alternate, so slow phases of a shared machine hit all alike
                r = (measure(row, variant, True, args.threads, args.warmup, args.iters) if args.quick
                     else _run_sub(row, variant, args, env))
                best = entry[variant]
                runs = (best or {}).get("runs_ms", []) + [r.get("ms")]
                if best is None or "error" in best or ("ms" in r and r["ms"] < best["ms"]):
                    best = r
                best["runs_ms"] = runs
                entry[variant] = best
        b = entry["baseline"]
        for variant in variants[1:]:
            if "ms" in b and "ms" in entry[variant]:
                entry[f"{variant}_ratio"] = b["ms"] / entry[variant]["ms"]
        entry["speed_ratio"] = entry.get("optimized_ratio")
        results.append(entry)
        print(f"{row}: " + ", ".join(f"{v} {entry[v].get('ms', float('nan')):.1f} ms "
                                     f"{entry[v].get('peak_rss_mb', float('nan')):.0f} MB" for v in variants),
              file=sys.stderr, flush=True)
    table = format_table(results)
    print(table)
    print(f"\n{_cpu_name()} ({os.cpu_count()} logical CPUs), torch {_torch_version()}, "
          f"threads {args.threads}, 1-min load average at start/end: "
          f"{results[0]['load_avg_1min'] if results else '-'} / {_load_avg()}; "
          f"allocator {allocator}"
          f"{'; QUICK (tiny settings)' if args.quick else ''}")
    path = args.json or os.path.join(ROOT, "benchmarks", "results.json")
    from utils.benchmark import write_json
    write_json(dict(rows=results, table=table, quick=args.quick, threads=args.threads, repeat=args.repeat,
                    cpu=_cpu_name(),
                    cpu_count=os.cpu_count(), torch_version=_torch_version(),
                    allocator=allocator), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
