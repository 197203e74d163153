"""The one timing loop of the project: wall-clock milliseconds per call of a function.

``--mode benchmark`` (:func:`deploy.benchmark.benchmark` and the runtime comparison), the detection
benchmark and the suites in ``benchmarks/`` all time through :func:`time_calls`, so every latency and
throughput figure follows one rule: ``warmup`` untimed calls, then ``iters`` calls each timed with
``time.perf_counter``; on a CUDA device the GPU is synchronised before starting and before stopping each
clock (the models themselves never synchronise).
"""
import platform
import time
from typing import Callable, List, Optional, Sequence

import torch

__all__ = ["time_calls", "percentile", "device_name"]


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], warmup: int, iters: int,
               device: Optional[torch.device] = None) -> List[float]:
    """``iters`` wall-clock times (ms) of ``fn()`` after ``warmup`` untimed calls; ``device``: the CUDA
    device ``fn`` runs on, synchronised around each timed call (None or a CPU device: no synchronisation)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile ``q`` in [0, 100] (numpy's default rule)."""
    v = sorted(values)
    if len(v) == 1:
        return float(v[0])
    pos = (len(v) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return name or platform.machine() or "cpu"
