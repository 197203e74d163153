"""CPU training step, NCHW vs channels_last, side by side: ``python benchmarks/channels_last_train.py``.

For each model the two memory formats alternate step by step (warmup steps unmeasured), so both see the
same machine load; prints one table row per model and precision: median ms per step in each format and
the channels_last speed-up (NCHW time / channels_last time; > 1 means channels_last is faster).
Training step = forward under autocast (bf16 rows), cross-entropy, backward, SGD momentum step, with
``memory_efficient`` on (the default) for the dense families.
"""
import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from deploy.timing import time_calls  # noqa: E402
from graphs.models import create_model  # noqa: E402

MODELS = {"densenet_bc_100": {}, "condensenet_86": {}, "cdnv2_110": {},
          "rexnet_1_0": {"cifar_stem": True}, "rexnet_lite_1_0": {"cifar_stem": True}}


def _setup(name, kwargs, channels_last, progress):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs)
    if hasattr(model, "set_progress"):
        model.set_progress(progress)
    if hasattr(model, "set_memory_efficient"):
        model.set_memory_efficient(True)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), fmt


def _step(model, opt, x, y, amp):
    with torch.autocast("cpu", torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--amp", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--progress", type=float, default=0.0, help="condensation progress (1.0: condensed form)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, 32x32, "
          f"progress {args.progress}")
    print("| model | precision | NCHW ms/step | channels_last ms/step | speed-up |")
    print("|---|---|---:|---:|---:|")
    for name in args.models:
        for amp in args.amp:
            runs = {}
            for cl in (False, True):
                model, opt, fmt = _setup(name, MODELS.get(name, {}), cl, args.progress)
                g = torch.Generator().manual_seed(1)
                x = torch.randn(args.batch, 3, 32, 32, generator=g).contiguous(memory_format=fmt)
                y = torch.randint(0, 10, (args.batch,), generator=g)
                runs[cl] = (model, opt, x, y, [])
            for i in range(args.warmup + args.iters):
                for cl in (False, True):
                    model, opt, x, y, times = runs[cl]
                    (ms,) = time_calls(lambda: _step(model, opt, x, y, amp == "bf16"), 0, 1)
                    if i >= args.warmup:
                        times.append(ms)
            nchw, cl = (statistics.median(runs[k][4]) for k in (False, True))
            print(f"| {name} | {amp} | {nchw:.0f} | {cl:.0f} | {nchw / cl:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
