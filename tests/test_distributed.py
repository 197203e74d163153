"""DistributedDataParallel on the CPU (gloo, 2 processes, synthetic data) against a single process."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
from tests.conftest import ROOT
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

BASE = {"agent": "ClassificationAgent", "model": "densenet_bc_100", "dataset": "synthetic", "num_classes": 4,
        "synthetic_train_size": 64, "synthetic_val_size": 37, "synthetic_shape": [3, 16, 16],
        "model_args": {"stages": [2, 2], "growth": [4, 4]}, "batch_size": 16, "val_batch_size": 8,
        "max_epoch": 2, "lr": 0.05, "device": "cpu", "hflip": 0.0, "seed": 1, "log_interval": 1}


def config(tmp_path, name, **changes):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**BASE, "exp_name": name, "exp_root": str(tmp_path / "exp"), **changes}))
    return str(path)


def torchrun(*args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_processes_with_syncbn_match_one_process(tmp_path):
    assert main.main([config(tmp_path, "single", sync_bn=True)]) == 0
    single = load_checkpoint(tmp_path / "exp" / "single" / "checkpoints" / "last.pth")["model"]
    out = tmp_path / "out"
    out.mkdir()
    r = torchrun(ROOT / "tests" / "ddp_worker.py", config(tmp_path, "ddp", sync_bn=True), out, "train")
    # SyncBatchNorm runs the plain layers, and says so once
    assert r.stderr.count("sync_bn: the memory-efficient layers run their plain form") == 1, r.stderr[-2000:]
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for k, v in single.items():
        assert torch.allclose(ranks[0]["model"][k].double(), v.double(), atol=2e-5, rtol=1e-4), k
        assert torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]), k
    # rank 0 alone wrote the experiment's files
    assert load_checkpoint(tmp_path / "exp" / "ddp" / "checkpoints" / "last.pth")["global_step"] == 2 * 4


def test_masks_identical_on_both_ranks_after_condensation(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path, "cdn", model="condensenet_50", model_args={"stages": [2, 2], "growth": [4, 4]},
                 max_epoch=2)
    r = torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "train")
    assert "pruning event" in r.stderr
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    assert ranks[0]["masks"], "the model has condensation masks"
    for k, mask in ranks[0]["masks"].items():
        assert torch.equal(mask, ranks[1]["masks"][k]), k
        assert mask.mean().item() == pytest.approx(0.25), k   # C = 4: all three events applied


def test_distributed_validation_counts_every_sample_once(tmp_path, capsys):
    path = config(tmp_path, "val", max_epoch=1)
    assert main.main([path]) == 0
    ckpt = tmp_path / "exp" / "val" / "checkpoints" / "last.pth"
    capsys.readouterr()
    from agents import build_agent
    from commands import validate
    from utils.config import load_config
    expected = validate(build_agent(load_config(path, [f"checkpoint={json.dumps(str(ckpt))}"], mode="validate")))
    assert expected["count"] == 37
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path, "val", max_epoch=1, checkpoint=str(ckpt))
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "validate")
    for r in (0, 1):
        got = torch.load(out / f"rank{r}.pth")["val"]
        assert got["count"] == 37
        assert got["top1"] == pytest.approx(expected["top1"], abs=1e-9)
        assert got["top5"] == pytest.approx(expected["top5"], abs=1e-9)


def _children(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError):
                pass
    return kids


def test_killing_one_rank_stops_the_launcher(tmp_path):
    cfg = config(tmp_path, "kill", max_epoch=10000, synthetic_train_size=512, dist_timeout=30)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), cfg, "--nproc", "2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, workers = time.time() + 120, []
        while time.time() < deadline and not (tmp_path / "exp" / "kill" / "metrics.csv").exists():
            time.sleep(0.5)
        workers = _children(proc.pid)      # the launcher runs torchrun in its own process
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        start = time.time()
        code = proc.wait(timeout=90)
        assert code != 0
        assert time.time() - start < 90
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path, "nan", max_epoch=3, log_interval=2, dist_timeout=30)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "nan")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for r in ranks:
        assert r["error"] and "NaN or infinite" in r["error"] and "iteration 4" in r["error"], r
    assert ranks[0]["batches"] == ranks[1]["batches"] == 4       # stopped together at the log interval


def test_ranks_draw_different_dropout_masks_from_identical_weights(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path, "drop", model="rexnet_1_0", model_args={}, drop_rate=0.5, max_epoch=1,
                 synthetic_train_size=32, synthetic_val_size=8)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "dropout")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for k, v in ranks[0]["initial"].items():
        assert torch.equal(v, ranks[1]["initial"][k]), k
    assert ranks[0]["first_drop"].shape == ranks[1]["first_drop"].shape
    assert not torch.equal(ranks[0]["first_drop"], ranks[1]["first_drop"])


def test_two_process_channels_last_run_has_no_grad_stride_warning(tmp_path):
    """main.py --nproc 2 on a tiny CondenseNetV2 (learned group convs and SFRs, masks in the step) in
    channels_last: the 1x1 weights' gradients are laid out as the weights, so DDP does not warn that
    "grad strides do not match bucket view strides" (it did on every rank)."""
    cfg = config(tmp_path, "cl", model="cdnv2_110", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]},
                 synthetic_shape=[3, 32, 32], synthetic_train_size=32, synthetic_val_size=8, batch_size=8,
                 max_epoch=1, channels_last=True)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), cfg, "--nproc", "2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr and "epoch 1/1 |" in r.stderr, r.stderr[-3000:]
    assert "strides do not match" not in r.stderr.lower(), r.stderr[-3000:]


def test_after_a_pruning_event_every_rank_condenses_with_rank_0s_masks(tmp_path):
    """Rank 1 prunes from drifted weights; the event's broadcast gives it rank 0's masks, and its condensed
    forward must then gather the inputs those masks keep (its own indices were built before the broadcast)."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = config(tmp_path, "prune", model="condensenet_50", model_args={"stages": [2, 2], "growth": [4, 4]},
                 max_epoch=2)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "prune")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    assert ranks[0]["keep"] and all(len(k) for k in ranks[0]["keep"].values()), "condensation finished"
    for name, keep in ranks[0]["keep"].items():
        assert torch.equal(ranks[0]["masks"][name], ranks[1]["masks"][name]), name
        assert torch.equal(keep, ranks[1]["keep"][name]), name
