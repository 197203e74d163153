"""The training step never waits for the device: no .item()/float()/bool() of a tensor and no host value
made into a device tensor inside a step; only the log-interval checks read the device (on CUDA the GPU
check, benchmarks/gpu_check.sh, proves the same with torch.cuda.set_sync_debug_mode("error"))."""
import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from agents import build_agent
from utils.config import load_config

# the places allowed to read the device: the log-interval checks, the pruning events, checkpoints,
# the epoch's closing sums
ALLOWED = ("_check_finite", "_report", "any", "all_true", "_set_progress", "save", "save_recovery", "payload",
           "compute", "resume", "validate", "evaluate")


def _step_frames():
    return [f.name for f in traceback.extract_stack()]


class _Reads(TorchDispatchMode):
    """Every device -> host read (``_local_scalar_dense``: .item(), float(t), bool(t), int(t))."""

    def __init__(self):
        super().__init__()
        self.bad = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            frames = _step_frames()
            if not any(name in ALLOWED for name in frames):
                self.bad.append(" <- ".join(reversed(frames[-8:])))
        return func(*args, **(kwargs or {}))


class _FreshCopies(TorchFunctionMode):
    """Host values made into device tensors: ``torch.tensor(..., device=...)`` and blocking ``.to(device)``."""

    def __init__(self):
        super().__init__()
        self.bad = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        fresh = func in (torch.tensor, torch.as_tensor, torch.scalar_tensor) and kwargs.get("device") is not None
        blocking = func is torch.Tensor.to and not kwargs.get("non_blocking") and any(
            isinstance(a, (torch.device, str)) for a in list(args[1:]) + [kwargs.get("device")])
        if (fresh or blocking) and not any(name in ALLOWED for name in _step_frames()):
            self.bad.append(f"{func.__name__} at " + " <- ".join(reversed(_step_frames()[-8:])))
        return func(*args, **kwargs)


def test_a_training_epoch_reads_nothing_back_between_log_intervals(tiny_config):
    path = tiny_config("sync", model="cdnv2_110", model_args={"stages": [2, 2, 2], "growth": [4, 8, 16]},
                       synthetic_train_size=48, synthetic_val_size=8, synthetic_shape=[3, 32, 32], batch_size=8,
                       log_interval=1000, ema=True, mixup=0.2, cutmix=1.0, label_smoothing=0.1, drop_path=0.1)
    agent = build_agent(load_config(path))
    trainer = agent.build_trainer()
    reads, copies = _Reads(), _FreshCopies()
    with reads, copies:
        trainer.train_one_epoch(0)
    assert trainer.state.step == 6
    assert not reads.bad, "\n".join(reads.bad)
    assert not copies.bad, "\n".join(copies.bad)
    agent.finalize()
