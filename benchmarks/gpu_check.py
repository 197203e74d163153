"""The GPU acceptance check's driver; ``sh benchmarks/gpu_check.sh`` runs it (about 8 minutes on one H100).

    python benchmarks/gpu_check.py [--work DIR] [--cifar DIR] [--cases a,b] [--skip ddp,export,table,compile]

CIFAR-10 comes through the project's own download path (``download: true`` into ``<work>/data``), or from
``--cifar DIR`` (the parent of ``cifar-10-batches-py``). Then, for CondenseNet-86, CondenseNetV2-110
(``configs/cdnv2_exp_0.json``) and ReXNet-1.0 (CIFAR stem), through ``main.py`` in this process:

1. one short epoch (``train_subset``) under ``amp`` fp16 + channels_last (ReXNet also ``compile: true``),
   with every host synchronisation in the training step an error: ``torch.cuda.set_sync_debug_mode("error")``
   is switched on around the steps, and off only where a step may read the device (the log-interval checks,
   pruning events, checkpoints, the epoch's closing sums: :data:`benchmarks.host_sync.ALLOWED`); the first step of a run is
   not checked (it compiles and autotunes);
2. a second run of the same command with ``max_epoch=2``, which must resume from the checkpoint (checked
   the same way);
3. ``--mode validate``; for the CondenseNets ``--mode convert`` and a validation of ``converted.pth``.

Then a 2-process DDP run (where 2 or more GPUs exist), ``--mode export`` with ``onnx_int8`` on the GPU (the
int8 file's accuracy measured with the runtime's CPU output beside labels on the GPU), and ONE table:
training images/s and peak GPU memory (``torch.cuda.max_memory_allocated``) per model and setting
(memory-efficient on/off, NCHW/channels_last) at the recipe's per-GPU batch, beside timm's ``rexnet_100``
trained the same way (the ImageNet ReXNet-1.0 recipe at 224 px) in the same run. Every stage prints PASS or
FAIL; the exit status is 1 when any failed.

On the CPU (``--device cpu --amp bf16 --smoke``: tiny models and subsets; tests/benchmarks/test_gpu_check.py) the same
code runs with the CPU for CUDA and bf16 for fp16. A dispatch mode that raises on scalar reads (``.item()``,
``float(t)``, ``bool(t)``) stands in for the sync debug mode (it does not see copies, which on the CPU wait
for nothing; under it torch.compile runs eagerly, so the CPU test skips ``compile``, which
tests/engine/test_switch_matrix.py covers through main.py), and the memory column shows "-" (no CUDA allocator).
Each invocation writes its experiments into a fresh ``<work>/run-<time>/``.
"""
import argparse
import functools
import gc
import json
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import main as cli  # noqa: E402
from deploy.timing import time_calls  # noqa: E402
from engine.accumulate import resolve_global_batch  # noqa: E402
from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.evaluator import autocast  # noqa: E402
from engine.optim import build_optimizer, param_groups  # noqa: E402
from benchmarks.host_sync import HostSyncCheck  # noqa: E402
from utils.config import load_config  # noqa: E402

PEER = "rexnet_100"                                 # timm's ReXNet-1.0
PEER_CONFIG = "configs/rexnet/rexnet_1_0_imagenet.json"    # the recipe the peer and our ReXNet-1.0 are timed at
STAGES_TO_SKIP = ("ddp", "export", "table", "compile")


@dataclass(frozen=True)
class Case:
    name: str
    config: str
    convert: bool = False
    compile: bool = False
    smoke_args: dict = field(default_factory=dict)    # model_args of the tiny model --smoke trains
    sets: tuple = ()                                  # what a one-epoch run needs changed in the recipe


CASES = (
    Case("condensenet_86", "configs/condensenet/condensenet_86_cifar10.json", convert=True,
         smoke_args={"stages": [1, 1, 1]}),
    Case("cdnv2_110", "configs/cdnv2_exp_0.json", convert=True, smoke_args={"stages": [1, 1, 1]}),
    Case("rexnet_1_0", "configs/rexnet/rexnet_1_0_cifar10.json", compile=True,
         smoke_args={"depth_mult": 0.5, "cifar_stem": True}, sets=("warmup_epochs=0.5",)),  # 1 epoch of 200
)


class StageFailed(Exception):
    """A check that did not hold (the message says which)."""


# ------------------------------------------------------------------------------------------ the runs
@dataclass
class Settings:
    work: Path
    cifar: Path
    device: str
    amp: str
    smoke: bool
    train_subset: int
    val_subset: int
    started: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    def overrides(self, case: Case, exp_name: Optional[str] = None, max_epoch: int = 1) -> List[str]:
        """The ``--set`` values of a run of ``case``."""
        sets = [f"exp_name={exp_name or case.name}", f"exp_root={self.runs}", f"data_root={self.cifar}",
                f"device={self.device}", f"amp={self.amp}", "channels_last=true", f"train_subset={self.train_subset}",
                f"val_subset={self.val_subset}", f"max_epoch={max_epoch}", *case.sets]
        if self.smoke:
            sets += [f"model_args={json.dumps(case.smoke_args, separators=(',', ':'))}", "batch_size=16",
                     "calibration_size=16"]
        return sets

    @property
    def runs(self) -> Path:
        """This check's experiments: a fresh folder per invocation, so no run resumes an older one."""
        return self.work / f"run-{self.started}"

    def folder(self, case: Case, exp_name: Optional[str] = None) -> Path:
        return self.runs / (exp_name or case.name)


def run_main(config: str, *args: str, sets: Sequence[str]) -> None:
    """``python main.py CONFIG ARGS --set SETS`` in this process; a non-zero exit is a failure."""
    code = cli.main([str(ROOT / config), *args, "--set", *sets])
    if code:
        raise StageFailed(f"main.py {' '.join(args) or 'train'} exited with {code} (its error is printed above)")


def _epoch_of(folder: Path) -> int:
    return load_checkpoint(folder / "checkpoints" / "last.pth")["epoch"]


def train_checked(case: Case, s: Settings, sets: Sequence[str], want_epoch: int) -> str:
    """One training run of ``case`` under :class:`HostSyncCheck`; its last checkpoint must be at ``want_epoch``."""
    with HostSyncCheck(torch.device(s.device)) as check:
        run_main(case.config, sets=sets)
    epoch = _epoch_of(s.folder(case))
    if epoch != want_epoch:
        raise StageFailed(f"last.pth is at epoch {epoch}, expected {want_epoch}")
    if not check.checked_steps:
        raise StageFailed("no training step ran under the host-sync check (the epoch has a single step?)")
    return f"{check.checked_steps} of {check.steps} steps checked for host syncs"


def case_stages(case: Case, s: Settings, compile_: bool) -> List[tuple]:
    """(label, function) of every stage of ``case``."""
    sets = s.overrides(case) + (["compile=true"] if compile_ else [])
    resumed = s.overrides(case, max_epoch=2) + (["compile=true"] if compile_ else [])
    folder = s.folder(case)
    setting = f"{s.amp} + channels_last" + (" + compile" if compile_ else "")

    def resume():
        note = train_checked(case, s, resumed, want_epoch=2)
        log = (folder / "logs" / "train.log").read_text()
        if "resumed from" not in log:
            raise StageFailed(f"the second run did not resume from the first one's checkpoint ({folder / 'logs'})")
        return note

    def validate():
        run_main(case.config, "--mode", "validate", sets=sets)
        if not (folder / "out" / "per_class_accuracy.csv").is_file():
            raise StageFailed("validate wrote no out/per_class_accuracy.csv")

    def convert():
        run_main(case.config, "--mode", "convert", sets=sets)
        converted = folder / "checkpoints" / "converted.pth"
        if not converted.is_file():
            raise StageFailed("convert wrote no checkpoints/converted.pth")
        run_main(case.config, "--mode", "validate", "--checkpoint", str(converted), sets=sets)

    stages = [(f"{case.name}: one epoch, {setting}, host syncs are errors",
               lambda: train_checked(case, s, sets, want_epoch=1)),
              (f"{case.name}: resume for a second epoch", resume),
              (f"{case.name}: validate", validate)]
    if case.convert:
        stages.append((f"{case.name}: convert, validate converted.pth", convert))
    return stages


def ddp_stage(case: Case, s: Settings) -> str:
    """``main.py --nproc 2`` (torchrun) for one short epoch; both processes must finish and rank 0 must write."""
    name = f"{case.name}_ddp"
    cmd = [sys.executable, str(ROOT / "main.py"), str(ROOT / case.config), "--nproc", "2", "--set",
           *s.overrides(case, exp_name=name)]
    proc = subprocess.run(cmd, cwd=ROOT, timeout=900)
    if proc.returncode:
        raise StageFailed(f"the 2-process run exited with {proc.returncode}")
    return f"last.pth at epoch {_epoch_of(s.folder(case, name))}"


def export_stage(case: Case, s: Settings) -> str:
    """``--mode export`` with onnx + onnx_int8 of ``case``'s trained experiment, on the training device."""
    run_main(case.config, "--mode", "export", sets=s.overrides(case) + ['export_formats=["onnx","onnx_int8"]'])
    results = json.loads((s.folder(case) / "out" / "export.json").read_text())
    top1 = results.get("onnx_int8", {}).get("val_top1")
    if top1 is None:
        raise StageFailed("out/export.json has no onnx_int8 accuracy")
    return f"onnx_int8 top-1 {top1:.2f}% (fp32 onnx {results['onnx']['val_top1']:.2f}%)"


def prepare_cifar(work: Path, cifar: Optional[Path]) -> Path:
    """The folder that holds ``cifar-10-batches-py``: ``cifar`` as given, else downloaded into ``work/data``
    through the project's loader (``download: true``)."""
    from datasets.cifar import load_cifar
    root = cifar if cifar is not None else work / "data"
    load_cifar("cifar10", root, download=cifar is None)
    return root


# ------------------------------------------------------------------------------------------ the table
@dataclass
class Row:
    model: str
    setting: str
    batch: int
    images_per_s: Optional[float]       # None: out of GPU memory
    peak_mb: Optional[float]


def measure_training(build: Callable[[], torch.nn.Module], batch: int, size: int, num_classes: int, amp: str,
                     channels_last: bool, device: torch.device, steps: int, warmup: int) -> tuple:
    """(images/s, peak MB or None on the CPU) of ``steps`` training steps after ``warmup``: forward under
    autocast, cross-entropy, backward through a gradient scaler (fp16), SGD (fused on CUDA) on random data.
    The peak counts what this model's training allocates: weights, gradients, optimizer state, activations."""
    torch.manual_seed(0)
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    model = build().to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = build_optimizer(param_groups(model, 1e-4), "sgd", 0.01, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)     # the peak starts at what is allocated now

    def step():
        with autocast(device, amp):
            loss = F.cross_entropy(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    def run_steps():
        for _ in range(steps):
            step()
    for _ in range(warmup):
        step()
    # one clock over all the steps: a synchronisation per step would drain the GPU's queue between steps
    (ms,) = time_calls(run_steps, 0, 1, device)
    rate = batch * steps / (ms / 1000.0)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
    del model, opt, x, y
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate, peak


def table_rows(s: Settings, steps: int, warmup: int, log: Callable[[str], None] = print) -> List[Row]:
    """Every model and setting of the table, measured one after another in this process."""
    from graphs.models import create_model
    import timm
    device = torch.device(s.device)
    torch.backends.cudnn.benchmark = True      # as a training run without deterministic: true sets it
    torch._dynamo.reset()                      # the compiled training runs' graphs and what they hold go
    gc.collect()
    jobs = []
    for case in CASES:
        cfg = resolve_global_batch(load_config(str(ROOT / case.config)), world_size=1)
        args = case.smoke_args if s.smoke else cfg.model_args
        build = functools.partial(create_model, cfg.model, num_classes=10, **args)
        efficient = build().supports("memory_efficient")
        for me in ((True, False) if efficient else (None,)):
            def built(build=build, me=me):
                model = build()
                return model.set_memory_efficient(me) if me is not None else model
            for cl in (False, True):
                jobs.append((case.name, me, cl, built, 4 if s.smoke else cfg.batch_size, 32, 10))
    peer_cfg = resolve_global_batch(load_config(str(ROOT / PEER_CONFIG)), world_size=1)
    batch, size, small = (2, 32, {"depth_mult": 0.5}) if s.smoke else (peer_cfg.batch_size, 224, {})
    for cl in (False, True):
        jobs.append((f"{peer_cfg.model} (ImageNet recipe)", None, cl,
                     functools.partial(create_model, peer_cfg.model, num_classes=1000, **small), batch, size, 1000))
        jobs.append((f"timm {PEER} (peer)", None, cl,
                     functools.partial(timm.create_model, PEER, num_classes=1000, **small), batch, size, 1000))
    rows = []
    for name, me, cl, build, batch, size, classes in jobs:
        setting = ", ".join([s.amp, "channels_last" if cl else "NCHW"]
                            + ([] if me is None else ["memory-efficient" if me else "memory-efficient off"])
                            + ([f"{size} px"] if classes == 1000 else []))
        try:
            rate, peak = measure_training(build, batch, size, classes, s.amp, cl, device, steps, warmup)
        except torch.cuda.OutOfMemoryError:
            rate = peak = None
            gc.collect()
            torch.cuda.empty_cache()
        rows.append(Row(name, setting, batch, rate, peak))
        log(f"  measured {name}, {setting}: " + (f"{rate:.3g} images/s" if rate else "out of memory"))
    return rows


def format_table(rows: Sequence[Row], device_name: str) -> str:
    lines = [f"Training throughput and peak memory on {device_name} (random data, per-GPU batch of the recipe)", "",
             "| model | setting | batch per GPU | images/s | peak GPU memory (MB) |", "|---|---|---:|---:|---:|"]
    for r in rows:
        rate = "out of memory" if r.images_per_s is None else f"{r.images_per_s:.3g}" if r.images_per_s < 100 \
            else f"{r.images_per_s:.0f}"
        peak = "-" if r.peak_mb is None else f"{r.peak_mb:.0f}"
        lines.append(f"| {r.model} | {r.setting} | {r.batch} | {rate} | {peak} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the run
class Report:
    """Runs stages, printing PASS/FAIL with the time and a note; remembers the failures."""

    def __init__(self):
        self.failed: List[str] = []

    def stage(self, label: str, fn: Callable[[], Optional[str]]):
        start = time.perf_counter()
        try:
            note = fn()
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next stage runs
            ours = [f for f in traceback.extract_tb(e.__traceback__)
                    if f.filename.startswith(str(ROOT)) and "site-packages" not in f.filename]
            where = "".join(traceback.format_list(ours[-3:])).rstrip()
            print(f"FAIL  {label} ({time.perf_counter() - start:.0f} s): {type(e).__name__}: {e}\n{where}", flush=True)
            self.failed.append(label)
            return None
        print(f"PASS  {label} ({time.perf_counter() - start:.0f} s)" + (f": {note}" if isinstance(note, str) else ""),
              flush=True)
        return note if note is not None else True


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "experiments" / "gpu_check",
                   help="folder for the downloaded CIFAR-10 (data/) and each invocation's experiments (run-<time>/)")
    p.add_argument("--cifar", type=Path, help="a folder that holds cifar-10-batches-py (no download)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--amp", default="fp16", choices=["fp16", "bf16", "none"])
    p.add_argument("--cases", default=",".join(c.name for c in CASES), help="comma-separated: " +
                   ", ".join(c.name for c in CASES))
    p.add_argument("--skip", default="", help=f"comma-separated stages to leave out: {', '.join(STAGES_TO_SKIP)}")
    p.add_argument("--ddp", choices=["auto", "on"], default="auto",
                   help="auto: the 2-process run where 2 or more GPUs exist; on: always (gloo on the CPU)")
    p.add_argument("--train-subset", type=int, default=6400)
    p.add_argument("--val-subset", type=int, default=2000)
    p.add_argument("--steps", type=int, default=20, help="timed training steps per table row")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="tiny models, batches and subsets: checks this script")
    args = p.parse_args(argv)
    unknown = set(filter(None, args.skip.split(","))) - set(STAGES_TO_SKIP)
    names = {c.name for c in CASES}
    if unknown or not set(args.cases.split(",")) <= names:
        p.error(f"--skip takes {', '.join(STAGES_TO_SKIP)}; --cases takes {', '.join(sorted(names))}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible to torch; run it on a machine with a GPU", file=sys.stderr)
        return 2
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "the CPU"
    print(f"gpu_check on {device_name}: torch {torch.__version__}, amp {args.amp}, work folder {args.work}", flush=True)
    report = Report()
    cifar = report.stage("CIFAR-10 " + ("from " + str(args.cifar) if args.cifar else "download (download: true)"),
                         lambda: str(prepare_cifar(args.work, args.cifar)))
    if cifar is None:
        return 1
    s = Settings(args.work, Path(cifar), args.device, args.amp, args.smoke, args.train_subset, args.val_subset)
    print(f"experiments in {s.runs}", flush=True)
    cases = [c for c in CASES if c.name in args.cases.split(",")]
    for case in cases:
        for label, fn in case_stages(case, s, compile_=case.compile and "compile" not in skip):
            report.stage(label, fn)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if "ddp" not in skip and (args.ddp == "on" or gpus >= 2):
        report.stage(f"{cases[0].name}: 2 processes (DDP)", lambda: ddp_stage(cases[0], s))
    elif "ddp" not in skip:
        print(f"SKIP  the 2-process DDP run: {gpus} GPU(s) here, it needs 2", flush=True)
    convertible = [c for c in cases if c.convert]
    if "export" not in skip and convertible:
        report.stage(f"{convertible[0].name}: export onnx + onnx_int8 on {device.type}",
                     lambda: export_stage(convertible[0], s))
    rows = report.stage("training throughput and memory", lambda: table_rows(s, args.steps, args.warmup)) \
        if "table" not in skip else None
    if rows:
        print("\n" + format_table(rows, device_name) + "\n", flush=True)
        report.failed += [f"{r.model}, {r.setting}: out of memory at batch {r.batch}" for r in rows
                          if r.images_per_s is None]
    print(f"gpu_check: {len(report.failed)} stage(s) failed: {'; '.join(report.failed)}" if report.failed
          else "gpu_check: every stage passed", flush=True)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
