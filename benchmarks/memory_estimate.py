"""Training memory per GPU of every recipe config, estimated on the CPU: ``python benchmarks/memory_estimate.py``.

Activations: the bytes autograd saves for the backward pass (``torch.autograd.graph.saved_tensors_hooks``;
each storage counted once, parameters left out) in one training-mode forward pass at batch 2 and at batch 4,
under the recipe's precision (fp16 is measured as bf16 autocast on the CPU: also 2 bytes) and
``memory_efficient`` as configured. The line through the two gives the bytes per image (plus the input
image itself, fp32) and a part independent of the batch (autocast's low-precision copies of the weights),
scaled linearly to the batch. Model state: fp32 weights, gradients, optimizer state (SGD momentum one copy;
AdamW, RMSprop, LAMB two) and the EMA's copy when the recipe has one.

Not counted: the backward pass's transient buffers (a few activation gradients; with ``memory_efficient``
one layer's recomputed BN output), cuDNN workspaces, the CUDA context (about 0.5 GB) and the allocator's
rounding. The estimate is therefore a floor, and the configs' ``max_batch_per_process`` keeps it within
half of an 80 GB card (``--budget-gb 40``): the last column is the largest power-of-two batch that does.
"""
import argparse
import glob
import os
import re
import sys
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from engine.accumulate import resolve_global_batch  # noqa: E402
from engine.evaluator import autocast  # noqa: E402
from graphs.models import create_model  # noqa: E402
from utils.config import load_config  # noqa: E402

CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
OPTIMIZER_COPIES = {"sgd": 1, "adamw": 2, "rmsprop": 2, "lamb": 2}
PATTERNS = ("*_imagenet.json", "condensenet_*_cifar*.json", "cdnv2_*_cifar*.json", "rexnet_*_cifar*.json",
            "densenet_*_cifar*.json")
MB, GB = 2**20, 2**30


def saved_bytes(model: nn.Module, x: torch.Tensor, amp: str = "none") -> int:
    """Bytes of the tensors one training forward of ``model`` on ``x`` saves for backward (each storage
    once, the parameters' own storages excluded)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            storages[s.data_ptr()] = s.nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(torch.device("cpu"), amp):
        out = model(x)
    del out                     # the graph (and with it every saved tensor) goes
    return sum(storages.values())


def activation_line(model: nn.Module, input_size: tuple, amp: str = "none") -> tuple:
    """(bytes per image, bytes independent of the batch) of the saved activations, from batches 2 and 4;
    the per-image bytes include the fp32 input image."""
    torch.manual_seed(0)
    a2, a4 = (saved_bytes(model, torch.randn(b, *input_size), amp) for b in (2, 4))
    per_image = (a4 - a2) / 2
    return per_image + 4 * torch.Size(input_size).numel(), a2 - 2 * per_image


def state_bytes(model: nn.Module, optimizer: str, momentum: float = 0.9, ema: bool = False) -> int:
    """fp32 weights + gradients + optimizer state (+ the EMA's weights and buffers)."""
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    copies = OPTIMIZER_COPIES[optimizer] if optimizer != "sgd" or momentum else 0
    return 4 * params * (2 + copies) + buffers + (4 * params + buffers if ema else 0)


def precision(amp: str) -> str:
    """The autocast dtype the CPU measures ``amp`` with (fp16 and bf16 are both 2 bytes)."""
    return "bf16" if amp in ("fp16", "bf16") else "none"


def estimate(path: str, budget_gb: float = 40.0) -> dict:
    """The memory estimate of one config at its batch per process on one GPU."""
    cfg = resolve_global_batch(load_config(path), world_size=1)
    model = create_model(cfg.model, num_classes=cfg.num_classes or CLASSES[cfg.dataset], **cfg.model_args)
    model.set_memory_efficient(cfg.memory_efficient)
    size = model.pretrained_cfg.input_size if cfg.input_size is None else (3, cfg.input_size, cfg.input_size)
    per_image, fixed = activation_line(model, size, precision(cfg.amp))
    state = state_bytes(model, cfg.optimizer, cfg.momentum, cfg.ema)
    total = lambda batch: state + fixed + per_image * batch  # noqa: E731
    global_batch = cfg.batch_size * cfg.grad_accum_steps
    fits = [b for b in (2 ** k for k in range(16)) if b <= global_batch and total(b) <= budget_gb * GB]
    return {"config": os.path.basename(path)[:-5], "model": cfg.model, "amp": cfg.amp, "input": size[-1],
            "per_image_mb": per_image / MB, "state_mb": (state + fixed) / MB, "global_batch": global_batch,
            "batch": cfg.batch_size, "gb": total(cfg.batch_size) / GB, "fits": max(fits) if fits else None}


def format_table(rows, budget_gb: float) -> str:
    lines = ["| config | model | precision | input | activations per image (MB) | fixed: weights, grads, optimizer, "
             "EMA, autocast copies (MB) | global batch | batch per GPU | estimate per GPU (GB) | largest batch within "
             f"{budget_gb:g} GB |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| `{r['config']}` | `{r['model']}` | {r['amp'] if r['amp'] != 'none' else 'fp32'} | "
                     f"{r['input']} | {r['per_image_mb']:.1f} | {r['state_mb']:.0f} | {r['global_batch']} | "
                     f"{r['batch']} | {r['gb']:.1f} | {r['fits'] or '-'} |")
    return "\n".join(lines)


def recipe_configs(patterns=PATTERNS):
    """The recipe configs: the ImageNet ones, then the CIFAR paper rows of each family."""
    natural = lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p)]  # noqa: E731
    seen = []
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*", pattern)), key=natural):
            if path not in seen:
                seen.append(path)
    return seen


def main(argv: Optional[list] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="*", help="config files (default: every recipe config)")
    p.add_argument("--budget-gb", type=float, default=40.0, help="memory one GPU may use (default: half of 80 GB)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(True)
    rows = []
    for path in args.configs or recipe_configs():
        rows.append(estimate(path, args.budget_gb))
        print(f"  {rows[-1]['config']}: {rows[-1]['gb']:.1f} GB at batch {rows[-1]['batch']}", file=sys.stderr,
              flush=True)
    print(format_table(rows, args.budget_gb))


if __name__ == "__main__":
    main()
