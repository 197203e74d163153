"""Field readiness, with real processes and real signals: one training run per experiment (the folder
lock), no experiment skeleton left by a failed start, and a prompt, safe stop on SIGTERM (in a validation,
during first-batch loading with workers, sent to the whole process group, during export, under DDP)."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from PIL import Image

import main
from _process_helpers import children, wait_for
from conftest import ROOT, checkpoint_dir
from engine.checkpoint import load_checkpoint, recovery_checkpoints


class Run:
    """``main.py ARGS`` in a subprocess; its stderr is collected as it comes, to wait for a marker."""

    def __init__(self, *args, new_group=False):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=new_group)
        self.pid, self.err = self.proc.pid, ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := os.read(self.proc.stderr.fileno(), 65536):
            self.err += chunk.decode(errors="replace")

    def wait_for(self, text, timeout=180):
        assert wait_for(lambda: text in self.err or self.proc.poll() is not None, timeout), f"no {text!r}"
        assert self.proc.poll() is None, f"ended before {text!r}: {self.err[-3000:]}"

    def stop(self, signum=signal.SIGTERM, group=False):
        """Send ``signum`` (to the whole process group: like Ctrl-C or a Slurm job step); (exit code,
        seconds until the process ended)."""
        start = time.time()
        os.killpg(self.pid, signum) if group else self.proc.send_signal(signum)
        code = self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        return code, time.time() - start

    def sigterm_when(self, ready, group=False):
        """Once ``ready`` (a text in stderr, or a predicate), send SIGTERM; check the exit code is
        128 + SIGTERM and return the seconds it took to stop."""
        try:
            if callable(ready):
                assert wait_for(lambda: ready() or self.proc.poll() is not None)
            else:
                self.wait_for(ready)
            code, seconds = self.stop(signal.SIGTERM, group)
        finally:
            self.kill()
        assert code == 128 + signal.SIGTERM, self.err[-3000:]
        return seconds

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def tree(folder):
    """Every file under ``folder`` with its bytes (the lock file aside: it holds the last holder's PID)."""
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(folder) for f in files if f != "train.lock"}


def metric_rows(path):
    """metrics.csv without its timing columns."""
    return [{k: v for k, v in r.items() if k not in ("epoch_time_s", "train_images_per_s")}
            for r in csv.DictReader(open(path))]


# ---------------------------------------------------------------- one training run per experiment
def test_second_training_run_is_refused_while_the_first_lives(tmp_path, tiny_config):
    path = tiny_config("lock", max_epoch=100000, synthetic_train_size=32)
    lock = tmp_path / "exp" / "lock" / "train.lock"
    first = Run(path)
    try:
        assert wait_for(lambda: lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]
                        or first.proc.poll() is not None), first.err
        second = subprocess.run([sys.executable, str(ROOT / "main.py"), path], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        message = second.stderr.strip().splitlines()[-1]
        assert message.startswith("error: ") and f"process {first.pid} " in message, message
        assert "wait for it to finish" in message and "exp_name" in message
        assert first.proc.poll() is None, "the first run goes on"
        first.proc.kill()       # no chance to clean up: the kernel releases the lock
        first.proc.wait()
    finally:
        first.kill()
    folder = checkpoint_dir(tmp_path, "lock")
    reached = load_checkpoint(folder / "last.pth")["epoch"] if (folder / "last.pth").exists() else 0
    assert main.main([path, "--set", f"max_epoch={reached + 1}"]) == 0
    assert load_checkpoint(folder / "last.pth")["epoch"] == reached + 1


# ---------------------------------------------------------------- a failed start leaves nothing behind
def test_failed_start_leaves_no_experiment_folder(tmp_path, tiny_config):
    exp_root = tmp_path / "runs" / "cifar"      # neither folder exists yet
    path = tiny_config("fresh", dataset="folder", data_root=str(tmp_path / "missing"), num_classes=None,
                  exp_root=str(exp_root))
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), path], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "error: the folder data set needs" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "runs").exists(), "the run created <exp_root>/<exp_name> and took it away again"

    other = tmp_path / "exp" / "someone_else"           # an existing exp_root keeps what was in it
    other.mkdir(parents=True)
    path = tiny_config("fresh2", dataset="folder", data_root=str(tmp_path / "missing"), num_classes=None)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), path], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "exp")) == ["someone_else"]


def test_failing_run_leaves_an_existing_experiment_untouched(tmp_path, tiny_config):
    path = tiny_config("kept", max_epoch=1, synthetic_train_size=32)
    assert main.main([path]) == 0
    folder = tmp_path / "exp" / "kept"
    before = tree(folder)
    # fails as late as a start can: data loaded, the trainer built, then its checkpoint does not fit
    bad = tiny_config("kept", max_epoch=2, model_args={"stages": [2, 2], "growth": [4, 8]})
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), bad], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "set model and model_args to match" in r.stderr, r.stderr[-2000:]
    assert tree(folder) == before


# ---------------------------------------------------------------- a prompt, safe stop
@pytest.mark.slow
def test_sigterm_during_validation_stops_within_a_batch_and_resumes_exactly(tmp_path, tiny_config):
    # 2 training steps per epoch, then a validation of 100 batches: the signal comes in its first ones
    long_val = dict(synthetic_train_size=32, synthetic_val_size=1600, val_batch_size=16, max_epoch=2,
                    deterministic=True)
    assert main.main([tiny_config("ref", **long_val)]) == 0

    path = tiny_config("int", **long_val)
    run = Run(path)
    seconds = run.sigterm_when("validate")
    assert "stopped by SIGTERM; the checkpoint is saved" in run.err
    assert seconds < 20, f"{seconds:.1f}s to stop"
    state = load_checkpoint(checkpoint_dir(tmp_path, "int") / "last.pth")
    assert (state["epoch"], state["batch"]) == (0, 2), "epoch 1 trained, its validation still owed"
    assert not (checkpoint_dir(tmp_path, "int") / "best.pth").exists()

    assert main.main([path]) == 0       # validates epoch 1 (its metrics row, best.pth), then trains epoch 2
    for name in ("last.pth", "best.pth"):
        ref, got = (load_checkpoint(checkpoint_dir(tmp_path, n) / name) for n in ("ref", "int"))
        assert (got["epoch"], got["best_acc1"]) == (ref["epoch"], ref["best_acc1"]), name
        for k in ref["model"]:
            assert torch.equal(got["model"][k], ref["model"][k]), (name, k)
    rows = metric_rows(tmp_path / "exp" / "int" / "metrics.csv")
    assert rows == metric_rows(tmp_path / "exp" / "ref" / "metrics.csv") and len(rows) == 2


@pytest.fixture(scope="module")
def slow_images(tmp_path_factory):
    """A folder data set of 3000x3000 JPEGs (hard links to one file): a worker takes seconds per batch."""
    root = tmp_path_factory.mktemp("slow_images")
    first = root / "image.jpg"
    Image.linear_gradient("L").resize((3000, 3000)).convert("RGB").save(first, quality=90)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(16):
                os.link(first, root / split / cls / f"{i}.jpg")
    return root


def test_sigterm_while_workers_load_the_first_batch_stops_at_once(tmp_path, slow_images, tiny_config):
    path = tiny_config("first", dataset="folder", data_root=str(slow_images), num_classes=None,
                  num_workers=2, batch_size=16, max_epoch=1)
    run = Run(path)
    seconds = run.sigterm_when("epoch 1/1")     # the progress bar: the loader is starting its workers
    assert "stopped by SIGTERM; nothing was saved" in run.err
    assert "Traceback" not in run.err
    assert seconds < 20, f"{seconds:.1f}s to stop"
    assert not (tmp_path / "exp" / "first").exists(), "nothing trained: the new folder is taken away"


@pytest.fixture(scope="module")
def small_images(tmp_path_factory):
    root = tmp_path_factory.mktemp("small_images")
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(16):
                pixels = (torch.rand(24, 24, 3, generator=g) * 128 + 127 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_sigterm_to_the_process_group_with_workers_saves_and_stops(tmp_path, small_images, tiny_config):
    # like Ctrl-C in a terminal or a Slurm job step: the data-loader workers get the signal too
    path = tiny_config("group", dataset="folder", data_root=str(small_images), num_classes=None,
                  num_workers=2, batch_size=4, max_epoch=1000, recovery_every=1, recovery_keep=1)
    run = Run(path, new_group=True)
    run.sigterm_when(lambda: recovery_checkpoints(checkpoint_dir(tmp_path, "group")), group=True)
    assert "stopped by SIGTERM; the checkpoint is saved" in run.err and "Traceback" not in run.err
    assert load_checkpoint(checkpoint_dir(tmp_path, "group") / "last.pth")["global_step"] > 0


def test_sigterm_during_export_leaves_no_partial_file(tmp_path, tiny_config):
    out = tmp_path / "exp" / "export" / "out"
    out.mkdir(parents=True)         # an existing experiment: its folder stays, so out/ can be inspected
    path = tiny_config("export", export_formats=["onnx", "openvino"])
    run = Run(path, "--mode", "export")
    # the ONNX file is being written and checked (atomic_path's temporary file exists)
    seconds = run.sigterm_when(lambda: any(".tmp-" in n for n in os.listdir(out)))
    assert "stopped by SIGTERM; nothing was saved" in run.err
    assert seconds < 20, f"{seconds:.1f}s to stop"
    left = os.listdir(out)
    assert not [n for n in left if n.startswith(".")], left     # no temporary file or folder
    assert "export.json" not in left and "export.xml" not in left, left
    if "export.onnx" in left:       # the signal came after the rename: a complete file
        import onnx
        onnx.checker.check_model(str(out / "export.onnx"))


# ---------------------------------------------------------------- under DDP
@pytest.mark.slow
def test_ddp_second_run_refused_and_sigterm_saves_on_every_rank(tmp_path, tiny_config):
    path = tiny_config("ddp", max_epoch=100000, synthetic_train_size=64, recovery_every=1, recovery_keep=1,
                  log_interval=1)
    lock = tmp_path / "exp" / "ddp" / "train.lock"
    first = Run(path, "--nproc", "2")
    try:
        assert wait_for(lambda: recovery_checkpoints(checkpoint_dir(tmp_path, "ddp")) or first.proc.poll() is not None)
        holder = int(lock.read_text().split()[0])
        assert holder in children(first.pid), "rank 0 (a child of the launcher) holds the lock"
        second = subprocess.run([sys.executable, str(ROOT / "main.py"), path, "--nproc", "2"], cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"process {holder} " in second.stderr.strip().splitlines()[-1]
        code, seconds = first.stop(signal.SIGTERM)      # to the launcher only, as Kubernetes sends it to PID 1
    finally:
        first.kill()
    assert code == 128 + signal.SIGTERM, first.err[-3000:]
    # both ranks stop with that message; the launcher prints it once
    assert first.err.count("stopped by SIGTERM; the checkpoint is saved") == 1, first.err[-3000:]
    assert "Traceback" not in first.err
    state = load_checkpoint(checkpoint_dir(tmp_path, "ddp") / "last.pth")
    assert state["global_step"] > 0
