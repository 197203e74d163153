"""The one-off measurements that benchmarks/README.md cites:

    python benchmarks/probes.py memory              # resident memory along a CondenseNet-86 training step
    python benchmarks/probes.py concat              # per-layer concatenation vs a shared buffer's prefix copy
    python benchmarks/probes.py forms cdnv2_c       # runtime_graph forms on OpenVINO, whole model and per layer
    python benchmarks/probes.py nodes FILE.xml      # OpenVINO time per node type of an exported file
    python benchmarks/probes.py eager               # the fused model vs runtime_graph forms in eager PyTorch

Each prints a short table; batch 1 (batch 64 for the training probes), 2 threads, random weights.
"""
import argparse
import collections
import os
import re
import statistics
import sys
import tempfile
import time

def _rss_mb():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024


START_MB = _rss_mb()       # before torch is imported
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from deploy.compare import write_runtime_files  # noqa: E402
from deploy.timing import time_calls  # noqa: E402

INPUT = {"condensenet_86": 32, "cdnv2_a": 224, "cdnv2_c": 224}


def _converted(name):
    import torch
    from graphs.models import create_model
    torch.manual_seed(0)
    model = create_model(name)
    model.set_progress(1.0)
    return model.eval().convert().eval()


def memory(args):
    """RSS after each start-up stage and the peak of 8 steps (channels_last, memory-efficient)."""
    import torch
    rows = [("python", START_MB), ("import torch (and deploy.compare)", _rss_mb())]
    import torch.nn.functional as F
    from graphs.models import create_model
    torch.set_num_threads(2)
    model = create_model("condensenet_86")
    model.set_progress(args.progress)
    model.set_memory_efficient(True)
    model = model.train().to(memory_format=torch.channels_last)
    x = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    rows.append(("model", _rss_mb()))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rows.append(("torch.optim.SGD (imports torch._dynamo)", _rss_mb()))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    times = time_calls(step, 2, 6)
    with open("/proc/self/status") as f:
        peak = int(f.read().split("VmHWM:")[1].split()[0]) / 1024
    from utils.allocator import active_allocator
    print(f"malloc {active_allocator()}, progress {args.progress}")
    prev = 0.0
    for label, mb in rows:
        print(f"  {label:42s} {mb:7.0f} MB  (+{mb - prev:.0f})")
        prev = mb
    print(f"  {'peak over the steps':42s} {peak:7.0f} MB  (+{peak - prev:.0f}); "
          f"{64000 / statistics.median(times):.1f} img/s")


def concat(args):
    """Stage 1 of CondenseNet-86 at batch 64: the 14 layer inputs built by torch.cat (as now) or copied
    out of a shared buffer's channel prefix (what BN / oneDNN would need), and BN on the strided prefix."""
    import torch
    torch.set_num_threads(2)
    for fmt in (torch.channels_last, torch.contiguous_format):
        n, h, c0, k, layers = 64, 32, 16, 8, 14
        feats = [torch.randn(n, c0, h, h).contiguous(memory_format=fmt)] + \
                [torch.randn(n, k, h, h).contiguous(memory_format=fmt) for _ in range(layers)]
        buf = torch.cat(feats, 1).contiguous(memory_format=fmt)
        w, b = torch.ones(buf.shape[1]), torch.zeros(buf.shape[1])
        rm, rv = torch.zeros(buf.shape[1]), torch.ones(buf.shape[1])
        total = collections.Counter()
        for i in range(1, layers + 1):
            c, parts, view = c0 + k * i, feats[:i + 1], buf[:, :c0 + k * i]
            total["torch.cat"] += statistics.median(time_calls(lambda: torch.cat(parts, 1), 3, 20))
            total["prefix copy"] += statistics.median(time_calls(lambda: view.contiguous(memory_format=fmt), 3, 20))
            total["BN on the strided prefix"] += statistics.median(time_calls(
                lambda: torch.native_batch_norm(view, w[:c], b[:c], rm[:c], rv[:c], True, 0.1, 1e-5), 3, 20))
        name = "channels_last" if fmt is torch.channels_last else "NCHW"
        print(f"{name:14s} " + ", ".join(f"{k} {v:.1f} ms" for k, v in total.items()) + " (sum over 14 layers)")


def _ov_compile(path, precision, perf=False):
    import numpy as np
    import openvino as ov
    core = ov.Core()
    model = core.read_model(path)
    shape = model.input(0).get_partial_shape()
    shape[0] = 1
    model.reshape(shape)
    cfg = {"INFERENCE_NUM_THREADS": 2, "PERF_COUNT": perf}
    if precision != "auto":
        cfg["INFERENCE_PRECISION_HINT"] = precision
    request = core.compile_model(model, "CPU", cfg).create_infer_request()
    x = np.random.default_rng(0).standard_normal([int(d) for d in model.input(0).shape]).astype(np.float32)
    for _ in range(10):
        request.infer({0: x})
    return request, x


def _node_times(request, x, key, calls=15):
    """Median over ``calls`` inferences of the node time summed by ``key(profiling_info entry)``, in µs."""
    per = collections.defaultdict(list)
    for _ in range(calls):
        request.infer({0: x})
        acc = collections.Counter()
        for p in request.profiling_info:
            if p.status == p.Status.EXECUTED:
                acc[key(p)] += p.real_time.total_seconds() * 1e6
        for k, v in acc.items():
            per[k].append(v)
    return {k: statistics.median(v) for k, v in per.items()}


def forms(args):
    """The model's runtime_graph forms on OpenVINO, one process each in turn, 5 rounds: min of medians;
    then µs per dense layer for the first two forms."""
    import subprocess
    res = INPUT[args.model]
    folder = tempfile.mkdtemp(prefix="probe_forms_")
    conv = _converted(args.model)
    from graphs.layers.runtime import runtime_graph
    variants = ["openvino", "openvino_int8"] if args.int8 else ["openvino"]
    paths = {}
    for form in args.forms.split(","):
        lgc, _, conv3x3 = form.partition("+")
        graph = runtime_graph(conv, lgc=lgc, conv3x3=conv3x3 or "grouped")
        files = write_runtime_files(conv, folder, form.replace("+", "_"), (3, res, res), variants, graph=graph)
        paths[form] = files["openvino_int8" if args.int8 else "openvino"]
    prec = "auto" if args.int8 else "f32"
    best = collections.defaultdict(list)
    for _ in range(5):
        for form, path in paths.items():
            out = subprocess.run([sys.executable, __file__, "_time", path, prec], capture_output=True, text=True)
            best[form].append(float(out.stdout.strip().splitlines()[-1]))
    print(f"{args.model} on OpenVINO {'int8' if args.int8 else 'f32'}, batch 1, 2 threads (min of 5 medians):")
    for form in paths:
        print(f"  {form:16s} {min(best[form]):6.2f} ms   rounds {' '.join(f'{v:.1f}' for v in best[form])}")
    names = list(paths)[:2]
    if len(names) == 2:
        layer = lambda p: tuple(map(int, m.groups())) if (m := re.search(r"denseblock_(\d+)\.(\d+)", p.node_name)) else (0, 0)  # noqa: E731
        a, b = (_node_times(*_ov_compile(paths[f], prec, perf=True), layer) for f in names)
        print(f"  µs per dense layer (block, layer): {names[0]} / {names[1]}")
        for k in sorted(set(a) | set(b)):
            if k != (0, 0):
                print(f"    {k}  {a.get(k, 0):6.0f} {b.get(k, 0):6.0f}")


def nodes(args):
    request, x = _ov_compile(args.path, args.precision, perf=True)
    med = _node_times(request, x, lambda p: f"{p.node_type}/{p.exec_type}")
    counts = collections.Counter(f"{p.node_type}/{p.exec_type}" for p in request.profiling_info
                                 if p.status == p.Status.EXECUTED)
    total = sum(med.values())
    wall = statistics.median(time_calls(lambda: request.infer({0: x}), 5, 30))
    print(f"{os.path.basename(args.path)}: {wall:.2f} ms per call, {total / 1000:.2f} ms in nodes")
    for k, v in sorted(med.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {k:48s} {v / 1000:6.2f} ms {100 * v / total:5.1f} %  n={counts[k]}")


def eager(args):
    import copy
    import torch
    from graphs.layers.runtime import runtime_graph
    torch.set_num_threads(2)
    for name, res in INPUT.items():
        conv = _converted(name)
        variants = {"fused": copy.deepcopy(conv).fuse(), "runtime auto": runtime_graph(conv),
                    "runtime dense": runtime_graph(conv, "dense"), "runtime gather": runtime_graph(conv, "gather")}
        x = torch.randn(1, 3, res, res)
        runs = collections.defaultdict(list)
        with torch.inference_mode():
            for _ in range(3):
                for k, m in variants.items():
                    runs[k].append(statistics.median(time_calls(lambda: m(x), 5, 20)))
        print(f"{name:15s} " + ", ".join(f"{k} {min(v):.2f} ms" for k, v in runs.items()))


def _time(path, precision):
    request, x = _ov_compile(path, precision)
    rounds = [statistics.median(time_calls(lambda: request.infer({0: x}), 0, 40)) for _ in range(3)]
    print(min(rounds))


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_time":
        return _time(sys.argv[2], sys.argv[3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="probe", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--progress", type=float, default=0.3)
    sub.add_parser("concat")
    f = sub.add_parser("forms")
    f.add_argument("model", choices=sorted(INPUT))
    f.add_argument("--forms", default="gather,dense,auto", help="comma list of LGC[+CONV3X3], e.g. auto+dense")
    f.add_argument("--int8", action="store_true", help="NNCF int8 files (random calibration) instead of f32")
    n = sub.add_parser("nodes")
    n.add_argument("path")
    n.add_argument("--precision", default="auto", choices=("auto", "f32"))
    sub.add_parser("eager")
    args = ap.parse_args(argv)
    {"memory": memory, "concat": concat, "forms": forms, "nodes": nodes, "eager": eager}[args.probe](args)


if __name__ == "__main__":
    sys.exit(main())
