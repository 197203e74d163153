"""Performance suite: training and inference rows, one command, a markdown table and a JSON file.

    python benchmarks/suite.py [--quick] [--json PATH] [--rows a,b,...] [--threads 2] [--repeat 2]

Every row measures one workload twice, in the same run: ``baseline`` (the unoptimised path of the same
model: masked-dense training with memory_efficient off in NCHW; the un-fused converted model) and
``optimized`` (memory_efficient on + channels_last for training; ``fuse()`` for converted inference;
for ReXNet timm's ``rexnet_100`` is the baseline, trained channels_last like ours). The table gives
images/s (training) or ms (batch-1 latency), peak RSS and the speed ratio optimized / baseline.
Inference rows have a third variant, ``compiled``: the optimized model through ``torch.compile``
(inductor with ``freezing``: weights prepacked for oneDNN, elementwise chains fused), with its one-off
compile time in the JSON. Fresh subprocesses, ``--repeat``, ``--quick`` and ``--allocator`` (default: the
malloc ``run.sh`` and ``main.py`` train on) work as benchmarks/harness.py describes.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import harness  # noqa: E402
from deploy.forms import deployable  # noqa: E402
from deploy.timing import time_calls  # noqa: E402

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
    "rexnet_train": ("ReXNet-1.0 training step b16, 224x224 (baseline: timm rexnet_100; both channels_last)", "train",
                     dict(model="rexnet_1_0", batch=16, res=224, timm="rexnet_100", quick=dict(batch=2, res=64))),
}
VARIANTS = {"train": ("baseline", "optimized"), "infer": ("baseline", "optimized", "compiled")}
WARMUP, ITERS = {"train": 2, "infer": 5}, {"train": 5, "infer": 30}


def measure(row, variant, quick=False, threads=2, warmup=None, iters=None, profile=False):
    """Measure one (row, variant) in this process; returns a JSON-ready dict. ``profile`` also prints
    torch.profiler's top operators to stderr."""
    import torch
    import torch.nn.functional as F
    from graphs.models import create_model

    torch.set_num_threads(threads)
    desc, kind, s = ROWS[row][0], ROWS[row][1], harness.settings(ROWS, row, quick)
    warmup = (0 if quick else WARMUP[kind]) if warmup is None else warmup
    iters = (1 if quick else ITERS[kind]) if iters is None else iters
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

        def fn():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        t = harness.timed(fn, warmup, iters)
        out.update(batch=batch, input=[3, res, res], ms=t["ms"], img_s=batch * 1000.0 / t["ms"],
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
            with torch.inference_mode():
                (compile_ms,) = time_calls(lambda: model(x), 0, 1)     # the first call compiles
            out.update(compile_s=compile_ms / 1000.0)
        with torch.inference_mode():
            t = harness.timed(lambda: model(x), warmup, iters)

        def fn():
            with torch.inference_mode():
                model(x)
        converted = bool(getattr(model, "is_converted", False))       # timm's peer has no such flag
        out.update(batch=1, input=[3, res, res], ms=t["ms"], img_s=1000.0 / t["ms"], fused=optimized,
                   compiled=variant == "compiled", converted=converted)
    if profile:
        harness.print_profile(fn)
    out.update(ms_min=t["ms_min"])
    return out


def main(argv=None):
    return harness.main(__doc__, __file__, ROWS, VARIANTS, measure, "results.json", argv)


if __name__ == "__main__":
    sys.exit(main())
