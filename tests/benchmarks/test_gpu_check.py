"""The GPU acceptance check (benchmarks/gpu_check.sh) on the CPU, so that it cannot rot between GPU runs: the
driver's stages, table and exit status with the CPU for CUDA and bf16 for fp16, and its host-sync check
(a dispatch mode raising on scalar reads stands in for torch.cuda.set_sync_debug_mode there)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from agents import build_agent
from benchmarks import gpu_check
from benchmarks import host_sync
from benchmarks.host_sync import HostSyncCheck
from engine.trainer import ClassificationTask, Trainer
from conftest import ROOT
from engine.checkpoint import load_checkpoint
from utils.config import load_config

SMOKE = ["--device", "cpu", "--amp", "bf16", "--smoke", "--train-subset", "48", "--val-subset", "32",
         "--steps", "2", "--warmup", "1"]


def _trainer(tiny_config):
    path = tiny_config("sync", model="cdnv2_110", model_args={"stages": [1, 1, 1]}, synthetic_train_size=48,
                       synthetic_val_size=8, synthetic_shape=[3, 32, 32], batch_size=8, log_interval=2, amp="bf16")
    agent = build_agent(load_config(path))
    return agent, agent.build_trainer()


def _read_the_loss(monkeypatch):
    """A host read in every step, as a ``loss.item()`` for a progress bar would be."""
    original = ClassificationTask.forward_loss

    def forward_loss(self, model, x, target):
        loss, output = original(self, model, x, target)
        float(loss.detach())
        return loss, output
    monkeypatch.setattr(ClassificationTask, "forward_loss", forward_loss)


def test_host_sync_check_allows_the_log_interval_and_catches_a_read_in_the_step(tiny_config, monkeypatch):
    agent, trainer = _trainer(tiny_config)
    with HostSyncCheck(torch.device("cpu")) as check:
        trainer.train_one_epoch(0)                  # the CPU checks the loss every step: an allowed read
    assert (check.steps, check.checked_steps) == (6, 5)
    # without the allowed places the same epoch fails: the check is really on between them
    monkeypatch.setattr(host_sync, "ALLOWED", ())
    trainer.state.batch = 0
    with pytest.raises(RuntimeError, match="synchronizing"), HostSyncCheck(torch.device("cpu")):
        trainer.train_one_epoch(0)
    monkeypatch.undo()
    _read_the_loss(monkeypatch)
    trainer.state.batch = 0
    trainer.train_one_epoch(0)                      # harmless without the check ...
    trainer.state.batch = 0
    with pytest.raises(RuntimeError, match="synchronizing"), HostSyncCheck(torch.device("cpu")):
        trainer.train_one_epoch(0)                  # ... an error with it
    assert Trainer.train_one_epoch.__name__ == "train_one_epoch" and not hasattr(Trainer.train_one_epoch, "__wrapped__")
    agent.finalize()


def test_a_failing_stage_is_reported_and_the_exit_status_is_1(tmp_path, cifar10_root, monkeypatch, capsys):
    _read_the_loss(monkeypatch)
    code = gpu_check.main([*SMOKE, "--cifar", str(cifar10_root), "--work", str(tmp_path), "--cases", "condensenet_86",
                           "--skip", "ddp,export,table"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"FAIL  condensenet_86: one epoch, bf16 \+ channels_last, host syncs are errors .*synchron", out)
    # the later stages still ran (and failed: no checkpoint was written)
    assert re.search(r"FAIL  condensenet_86: resume .*synchronizing", out)
    assert out.splitlines()[-1].startswith("gpu_check: 4 stage(s) failed: condensenet_86: one epoch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_shell_script_refuses_a_machine_without_cuda():
    r = subprocess.run(["sh", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 2 and r.stderr.strip() == ("gpu_check: no CUDA device is visible to torch; run it on a "
                                                      "machine with a GPU")


@pytest.mark.slow
def test_the_whole_check_passes_on_the_cpu(tmp_path, cifar10_root, capsys):
    """Every stage (the 2-process run with gloo), then the table: one row per model and setting."""
    code = gpu_check.main([*SMOKE, "--cifar", str(cifar10_root), "--work", str(tmp_path), "--ddp", "on",
                           "--skip", "compile"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and out.rstrip().endswith("every stage passed")
    (runs,) = tmp_path.glob("run-*")
    for name in ("condensenet_86", "cdnv2_110", "rexnet_1_0"):
        assert load_checkpoint(runs / name / "checkpoints" / "last.pth")["epoch"] == 2
    for name in ("condensenet_86", "cdnv2_110"):
        assert (runs / name / "checkpoints" / "converted.pth").is_file()
    assert load_checkpoint(runs / "condensenet_86_ddp" / "checkpoints" / "last.pth")["epoch"] == 1
    export = json.loads((runs / "condensenet_86" / "out" / "export.json").read_text())
    assert 0 <= export["onnx_int8"]["val_top1"] <= 100
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]]
    assert header == ["model", "setting", "batch per GPU", "images/s", "peak GPU memory (MB)"]
    settings = [f"bf16, {fmt}, memory-efficient{off}" for off in ("", " off") for fmt in ("NCHW", "channels_last")]
    expected = [(m, s) for m in ("condensenet_86", "cdnv2_110") for s in settings]
    expected += [("rexnet_1_0", "bf16, NCHW"), ("rexnet_1_0", "bf16, channels_last")]
    expected += [(m, f"bf16, {fmt}, 32 px") for fmt in ("NCHW", "channels_last")
                 for m in ("rexnet_1_0 (ImageNet recipe)", "timm rexnet_100 (peer)")]
    assert [(r[0], r[1]) for r in rows] == expected
    assert all(float(r[3]) > 0 and r[4] == "-" for r in rows)
    assert [int(r[2]) for r in rows] == [4] * 10 + [2] * 4
