"""Evaluation over a (possibly sharded) validation split: loss, top-1, top-5, optional confusion matrix."""
import contextlib
from typing import Callable, Optional

import torch
from torch import nn
from tqdm import tqdm

from utils import shutdown

from .metrics import RunningSums

__all__ = ["evaluate", "autocast"]

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str = "none"):
    """``torch.autocast`` for ``amp`` ('none' | 'bf16' | 'fp16') on ``device``'s type."""
    dtype = _AMP.get(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, dist, num_classes: int, amp: str = "none",
             confusion: bool = False, progress: bool = True, forward: Optional[Callable] = None) -> dict:
    """Loss, top-1, top-5 (``confusion``: also the K x K matrix, rows = true class) over ``loader``.

    Every rank evaluates its shard; the sums are all-reduced, so each sample counts once. ``forward``
    replaces ``model(x)`` (e.g. a deployment runtime). The model's train/eval mode is restored. A stop
    request abandons the evaluation within a batch or two (utils.shutdown.StopRequested).
    """
    was_training = model.training
    model.eval()
    sums = RunningSums(device)
    criterion = nn.CrossEntropyLoss()
    k = num_classes
    matrix = torch.zeros(k * k, dtype=torch.int64, device=device) if confusion else None
    run = forward or model
    ctx = autocast(device, amp) if forward is None else contextlib.nullcontext()
    checked = dist.min(len(loader), device)     # the batches every rank has (shards may differ by one)
    try:
        for i, (x, y) in enumerate(tqdm(loader, desc="validate", disable=not (progress and dist.is_main),
                                        leave=False, dynamic_ncols=True)):
            if i < checked:
                shutdown.check(dist, device)
            with ctx:
                output = run(x)
            sums.update(criterion(output.float(), y), output, y)
            if confusion:
                matrix += torch.bincount(y * k + output.argmax(1), minlength=k * k)
    finally:
        model.train(was_training)
    dist.all_reduce_sum(sums.sums)
    stats = sums.compute()
    if confusion:
        stats["confusion"] = dist.all_reduce_sum(matrix).view(k, k).cpu()
    return stats
