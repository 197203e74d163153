"""Gradient accumulation: ``grad_accum_steps`` micro-batches per optimizer step.

Spec the training loop follows (timm ``--grad-accum-steps`` semantics):

* the effective batch is ``batch_size x grad_accum_steps``; the lr schedule, ``recovery_every``, EMA
  updates, the condensation progress and ``global_step`` count *optimizer* steps, of which an epoch of
  ``n`` batches has ``optimizer_steps(n, k) = ceil(n / k)``;
* batch ``i`` of the epoch belongs to group ``i // k``; its loss is divided by the number of batches
  in that group (``k``, or fewer for the epoch's last group) before ``backward``, so the accumulated
  gradient is the mean over the group, as one big batch would give (exactly, when the micro-batches
  are the same size);
* under DDP the micro-batches before a group's last one run inside ``no_sync()`` (one all-reduce per
  optimizer step); clipping, ``scaler.step``, ``zero_grad`` and the EMA update run at the group end
  only (:func:`is_step_end`);
* a checkpoint is written only at a group end (a mid-group stop finishes the group first), so resume
  never has half-accumulated gradients.
"""
import contextlib
import math
from typing import Callable, Iterable, Optional, Tuple

import torch
from torch import nn

from utils.errors import ConfigError


def split_global_batch(total: int, processes: int, max_per_process: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """(batch per step over all processes, accumulation steps) that make ``total`` with at most
    ``max_per_process`` per process, or None when ``total`` does not split evenly over ``processes``."""
    limit = max_per_process or total
    for steps in range(1, total + 1):
        if total % (processes * steps) == 0 and total // (processes * steps) <= limit:
            return total // steps, steps
    return None


def resolve_global_batch(config, world_size: int):
    """``config`` (a utils.config.Settings) with ``batch_size`` and ``grad_accum_steps`` derived from
    ``global_batch_size`` for ``world_size`` processes; unchanged without a global batch."""
    total = config.global_batch_size
    if total is None and config.max_batch_per_process is not None:
        raise ConfigError("max_batch_per_process applies with global_batch_size; set global_batch_size (the "
                          "recipe's batch) or drop max_batch_per_process")
    if total is None:
        return config
    split = split_global_batch(total, world_size, config.max_batch_per_process)
    if split is None:
        raise ConfigError(f"global_batch_size {total} does not split evenly over {world_size} processes; use "
                          f"a process count that divides it")
    return config.replace(batch_size=split[0], grad_accum_steps=split[1])


def optimizer_steps(num_batches: int, steps: int) -> int:
    """Optimizer steps in an epoch of ``num_batches`` batches (the last group may be short)."""
    return math.ceil(num_batches / steps)


def group_size(i: int, num_batches: int, steps: int) -> int:
    """Number of micro-batches in the group of batch ``i`` (0-based)."""
    start = (i // steps) * steps
    return min(steps, num_batches - start)


def is_step_end(i: int, num_batches: int, steps: int) -> bool:
    """True when batch ``i`` is the last micro-batch of its group: step the optimizer after it."""
    return (i + 1) % steps == 0 or i + 1 == num_batches


def sync_context(model: nn.Module, i: int, num_batches: int, steps: int):
    """``model.no_sync()`` for a DDP model's micro-batches before the group end, else a no-op."""
    if hasattr(model, "no_sync") and not is_step_end(i, num_batches, steps):
        return model.no_sync()
    return contextlib.nullcontext()


def accumulated_step(model: nn.Module, criterion: Callable, optimizer: torch.optim.Optimizer,
                     micro_batches: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One optimizer step over ``micro_batches`` following the spec above; returns the summed scaled
    loss (detached). The reference the Trainer's loop must agree with (tests/engine/test_recipe.py)."""
    batches = list(micro_batches)
    n = len(batches)
    optimizer.zero_grad(set_to_none=True)
    total = None
    for i, (x, y) in enumerate(batches):
        with sync_context(model, i, n, n):
            loss = criterion(model(x), y) / group_size(i, n, n)
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    optimizer.step()
    return total
