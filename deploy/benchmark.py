"""Speed and memory of a model: inference latency/throughput, a training step, peak memory.

``benchmark(model, input_size, device=...)`` measures the module exactly as given (a training-time
CondenseNet is measured with its masks; export ``model.convert()`` to measure the deployable form). It
never changes ``model``: everything runs on a deep copy (the training step updates weights and BN
statistics of that copy only).

Timing (:func:`deploy.timing.time_calls`): every measured call is preceded by ``warmup`` unmeasured calls;
each of ``iters`` calls is timed with ``time.perf_counter`` and, on CUDA, ``torch.cuda.synchronize`` before
starting and before stopping the clock (the models themselves never synchronise). Reported are the median
and the 90th percentile of the per-call times; throughputs (images/s) are computed from the median.

Peak memory (``*_peak_mem_mb``, MiB, ``mem_method`` ``'cuda_max_memory_allocated'``) is measured on CUDA
only: ``torch.cuda.max_memory_allocated`` after ``torch.cuda.reset_peak_memory_stats``, minus the memory
allocated before the phase (so it is what the phase itself needed: activations, gradients, optimizer
state). On the CPU the fields are None: the CPU allocator keeps no such statistics, and the process's
resident-set peak measures malloc's reuse of freed pages instead (a phase after a larger one read 0 MiB).
"""
import copy
import json
import statistics

import torch

from utils.atomic_io import atomic_write
from utils.errors import ConfigError

from .export import first_output, resolve_input_size
from .timing import device_name, percentile, time_calls

__all__ = ["benchmark", "format_table", "write_json", "RESULT_FIELDS"]

# Field -> type of every benchmark() result (checked by the tests; main.py may rely on them).
RESULT_FIELDS = {
    "model": (str, type(None)), "device": str, "device_name": str, "torch_version": str,
    "num_threads": int, "input_size": list, "channels_last": bool, "amp": (str, type(None)),
    "params": int, "warmup": int, "iters": int,
    "latency_batch": int, "latency_ms_median": float, "latency_ms_p90": float,
    "throughput_batch": int, "throughput_img_s": float,
    "train_batch": (int, type(None)), "train_step_ms_median": (float, type(None)),
    "train_img_s": (float, type(None)),
    "infer_peak_mem_mb": (float, type(None)), "train_peak_mem_mb": (float, type(None)),
    "mem_method": (str, type(None)),
    "inference": list,
}

_AMP_DTYPES = {"fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
               "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------ memory
class _PeakMemory:
    """Peak memory (MiB) of one phase on a CUDA ``device``; None elsewhere (see the module docstring)."""

    def __init__(self, device):
        self.device = device
        self.method = "cuda_max_memory_allocated" if device.type == "cuda" else None

    def start(self):
        if self.method:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)

    def stop_mb(self):
        if not self.method:
            return None
        torch.cuda.synchronize(self.device)
        return max(0, torch.cuda.max_memory_allocated(self.device) - self.base) / 2 ** 20


def _resolve_device(device):
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device {device!r} is not a valid torch device; use 'cpu' or 'cuda[:N]'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was requested but CUDA is not available; use device 'cpu'")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _resolve_amp(amp, device):
    if amp in (None, False, "none", "fp32", "float32"):
        return None
    if isinstance(amp, torch.dtype):
        dtype = amp
    elif amp is True:
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif isinstance(amp, str) and amp.lower() in _AMP_DTYPES:
        dtype = _AMP_DTYPES[amp.lower()]
    else:
        raise ConfigError(f"amp must be null, 'fp16' or 'bf16', got {amp!r}")
    if dtype not in (torch.float16, torch.bfloat16):
        raise ConfigError(f"amp must be null, 'fp16' or 'bf16', got {amp!r}")
    return dtype


# ------------------------------------------------------------------------------------ benchmark
def benchmark(model, input_size=None, device="cpu", batch_sizes=(1, 16), train_batch=16, warmup=2,
              iters=5, channels_last=False, amp=None, name=None, lr=1e-4, seed=0):
    """Measure ``model`` on ``device``; returns a JSON-ready dict (fields in :data:`RESULT_FIELDS`).

    - inference (eval mode, ``torch.inference_mode``) at every batch size in ``batch_sizes``: median and
      p90 ms per call, images/s from the median (``inference`` list); the summary fields report latency
      at ``batch_sizes[0]`` (``latency_ms_median``, ``latency_ms_p90``) and throughput at
      ``batch_sizes[-1]`` (``throughput_img_s``).
    - a training step at ``train_batch`` (train mode: forward, cross-entropy on random labels, backward,
      SGD momentum 0.9 step, ``lr``): ``train_step_ms_median``, ``train_img_s``; ``train_batch=None``
      or 0 skips it.
    - peak memory of the largest inference batch and of the training steps (see module docstring).
    ``amp``: None | 'fp16' | 'bf16' (autocast on the device). ``channels_last`` converts the model and
    the inputs. ``warmup``/``iters``: unmeasured/measured calls per measurement.
    """
    dev = _resolve_device(device)
    amp_dtype = _resolve_amp(amp, dev)
    input_size = resolve_input_size(model, input_size)
    try:
        batch_sizes = [int(b) for b in (batch_sizes if isinstance(batch_sizes, (list, tuple)) else [batch_sizes])]
    except (TypeError, ValueError):
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        raise ConfigError(f"batch_sizes must be a non-empty list of positive integers, got {batch_sizes!r}")
    train_batch = int(train_batch) if train_batch else None
    if train_batch is not None and train_batch < 1:
        raise ConfigError(f"train_batch must be a positive integer or null, got {train_batch!r}")
    if not (isinstance(warmup, int) and warmup >= 0 and isinstance(iters, int) and iters >= 1):
        raise ConfigError(f"warmup must be >= 0 and iters >= 1 (integers), got warmup={warmup!r}, iters={iters!r}")

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(seed)

    def make_input(b):
        return torch.randn(b, *input_size, generator=gen).to(dev).contiguous(memory_format=fmt)

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    mem = _PeakMemory(dev)
    result = {
        "model": name, "device": str(dev), "device_name": device_name(dev),
        "torch_version": torch.__version__, "num_threads": int(torch.get_num_threads()),
        "input_size": list(input_size), "channels_last": bool(channels_last),
        "amp": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "params": int(sum(p.numel() for p in model.parameters())),
        "warmup": int(warmup), "iters": int(iters),
    }

    # ---- inference
    net = copy.deepcopy(model).to(dev).to(memory_format=fmt).eval()
    inference = []
    for b in batch_sizes:
        x = make_input(b)
        mem.start()
        with torch.inference_mode(), autocast():
            times = time_calls(lambda: net(x), warmup, iters, dev)
        med = statistics.median(times)
        inference.append({"batch": b, "ms_median": float(med), "ms_p90": percentile(times, 90),
                          "img_s": float(b * 1000.0 / med), "peak_mem_mb": mem.stop_mb()})
        del x
    del net
    result.update({
        "latency_batch": inference[0]["batch"], "latency_ms_median": inference[0]["ms_median"],
        "latency_ms_p90": inference[0]["ms_p90"], "throughput_batch": inference[-1]["batch"],
        "throughput_img_s": inference[-1]["img_s"],
        "infer_peak_mem_mb": None if mem.method is None else max(r["peak_mem_mb"] for r in inference),
        "inference": inference,
    })

    # ---- training step
    result.update({"train_batch": train_batch, "train_step_ms_median": None, "train_img_s": None,
                   "train_peak_mem_mb": None})
    if train_batch:
        net = copy.deepcopy(model).to(dev).to(memory_format=fmt).train()
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=lr, momentum=0.9)
        scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16 and dev.type == "cuda")
        x = make_input(train_batch)
        with torch.no_grad(), autocast():
            num_classes = first_output(net.eval()(x[:1])).shape[-1]
        net.train()
        y = torch.randint(0, num_classes, (train_batch,), generator=gen).to(dev)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = torch.nn.functional.cross_entropy(first_output(net(x)).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        mem.start()
        times = time_calls(step, warmup, iters, dev)
        peak = mem.stop_mb()
        med = statistics.median(times)
        result.update({"train_step_ms_median": float(med), "train_img_s": float(train_batch * 1000.0 / med),
                       "train_peak_mem_mb": peak})
        del net, opt, x, y
    result["mem_method"] = mem.method
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ------------------------------------------------------------------------------------ reporting
_COLUMNS = [
    ("model", "model", "{}"),
    ("device", "device", "{}"),
    ("threads", "num_threads", "{}"),
    ("input", "input_size", "{}"),
    ("params (M)", "params", "{:.2f}"),
    ("lat. median (ms)", "latency_ms_median", "{:.2f}"),
    ("lat. p90 (ms)", "latency_ms_p90", "{:.2f}"),
    ("infer (img/s)", "throughput_img_s", "{:.1f}"),
    ("train (img/s)", "train_img_s", "{:.1f}"),
    ("infer mem (MiB)", "infer_peak_mem_mb", "{:.1f}"),
    ("train mem (MiB)", "train_peak_mem_mb", "{:.1f}"),
]


def _cell(row, key, fmt):
    v = row.get(key)
    if v is None:
        return "-"
    if key == "params":
        return fmt.format(v / 1e6)
    if key == "input_size":
        return "x".join(str(s) for s in v)
    if key == "latency_ms_median" and row.get("latency_batch") not in (None, 1):
        return fmt.format(v) + f" @{row['latency_batch']}"
    if key == "throughput_img_s" and row.get("throughput_batch") is not None:
        return fmt.format(v) + f" @{row['throughput_batch']}"
    if key == "train_img_s" and row.get("train_batch") is not None:
        return fmt.format(v) + f" @{row['train_batch']}"
    return fmt.format(v).replace("|", "\\|")


def format_table(rows):
    """A markdown table of one or more :func:`benchmark` results (missing values shown as '-')."""
    if isinstance(rows, dict):
        rows = [rows]
    methods = sorted({r.get("mem_method") for r in rows if r.get("mem_method")})
    columns = [c for c in _COLUMNS if methods or not c[1].endswith("_peak_mem_mb")]   # no CPU memory figure
    header = "| " + " | ".join(c[0] for c in columns) + " |"
    sep = "|" + "|".join("---" if c[1] in ("model", "device", "input_size") else "---:" for c in columns) + "|"
    lines = [header, sep]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, key, fmt) for _, key, fmt in columns) + " |")
    if rows:
        lines.append("")
        lines.append(f"Peak memory: {', '.join(methods) if methods else 'measured on CUDA only'}; latency at "
                     f"batch 1 unless marked @N.")
    return "\n".join(lines)


def write_json(result, path):
    """Write ``result`` (a dict or list of dicts) as indented JSON to ``path`` atomically."""
    return atomic_write(path, json.dumps(result, indent=2, sort_keys=False, default=str) + "\n", "benchmark JSON")
