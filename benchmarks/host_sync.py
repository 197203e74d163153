"""The host-sync check of the GPU acceptance check (benchmarks/gpu_check.py) and its CPU test.

``HostSyncCheck`` makes every host synchronisation inside a training step an error: on CUDA through
``torch.cuda.set_sync_debug_mode("error")``, on the CPU through a dispatch mode that raises on scalar reads.
"""
import contextlib
import functools
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from engine.checkpoint import CheckpointManager
from engine.metrics import RunningSums
from engine.trainer import Trainer
from utils.distributed import DistContext

# where a training step may read the device: the log-interval checks, pruning events, checkpoints and the
# epoch's closing sums (tests/engine/test_host_sync.py allows the same places)
ALLOWED = ((Trainer, "_check_finite"), (Trainer, "_report"), (Trainer, "_set_progress"), (CheckpointManager, "save"),
           (CheckpointManager, "save_recovery"), (RunningSums, "compute"), (DistContext, "any"),
           (DistContext, "all_true"))

class _ScalarReads(TorchDispatchMode):
    """The CPU stand-in of the sync debug mode: a scalar read (``_local_scalar_dense``) raises at level 2."""

    def __init__(self, check: "HostSyncCheck"):
        super().__init__()
        self.check = check

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default and self.check.level == 2:
            raise RuntimeError("called a synchronizing operation (a scalar read of a tensor) in the training step")
        return func(*args, **(kwargs or {}))


class HostSyncCheck:
    """While active, every ``Trainer.train_one_epoch`` runs its steps with host syncs as errors
    (``torch.cuda.set_sync_debug_mode("error")``; the CPU stand-in above on the CPU), from the second step
    of the run on; the :data:`ALLOWED` methods run with the check off. ``checked_steps`` counts the steps
    that ran under it."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.level = 0
        self.steps = self.checked_steps = 0
        self._saved = []

    def _set(self, level: int) -> None:
        self.level = level
        if self.cuda:
            torch.cuda.set_sync_debug_mode(level)

    @contextlib.contextmanager
    def _off(self):
        previous = self.level
        self._set(0)
        try:
            yield
        finally:
            self._set(previous)

    def _patch(self, owner, name: str, make: Callable) -> None:
        original = getattr(owner, name)
        self._saved.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(make(original)))

    def __enter__(self) -> "HostSyncCheck":
        check = self

        def epoch(original):
            def run(trainer, *args, **kwargs):
                reads = contextlib.nullcontext() if check.cuda else _ScalarReads(check)
                check._set(2 if check.steps else 0)     # a later epoch of the run is checked from its start
                try:
                    with reads:
                        return original(trainer, *args, **kwargs)
                finally:
                    check._set(0)
            return run

        def step(original):
            def run(trainer, *args, **kwargs):
                out = original(trainer, *args, **kwargs)
                check.checked_steps += check.level == 2
                check.steps += 1
                check._set(2)           # from here to the end of the epoch, outside ALLOWED
                return out
            return run

        def allowed(original):
            def run(*args, **kwargs):
                with check._off():
                    return original(*args, **kwargs)
            return run

        self._patch(Trainer, "train_one_epoch", epoch)
        self._patch(Trainer, "_step", step)
        for owner, name in ALLOWED:
            self._patch(owner, name, allowed)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()
        self._set(0)
