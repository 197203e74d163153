"""DistributedDataParallel on the CPU (gloo, synthetic data) against a single process: 2 processes on one
machine, and two nodes of one process each."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import main
from _process_helpers import children
from conftest import ROOT
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def config(tiny_config):
    """The tiny config for 2 epochs of 4 steps, without flips, on 37 validation images (2 processes split
    them unevenly)."""
    return lambda name, **changes: tiny_config(name, **{"synthetic_val_size": 37, "val_batch_size": 8, "max_epoch": 2,
                                                        "hflip": 0.0, "seed": 1, "log_interval": 1, **changes})


def torchrun(*args, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_processes_with_syncbn_match_one_process(tmp_path, config):
    assert main.main([config("single", sync_bn=True)]) == 0
    single = load_checkpoint(tmp_path / "exp" / "single" / "checkpoints" / "last.pth")["model"]
    out = tmp_path / "out"
    out.mkdir()
    r = torchrun(ROOT / "tests" / "ddp_worker.py", config("ddp", sync_bn=True), out, "train")
    # SyncBatchNorm runs the plain layers, and says so once
    assert r.stderr.count("sync_bn: the memory-efficient layers run their plain form") == 1, r.stderr[-2000:]
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for k, v in single.items():
        assert torch.allclose(ranks[0]["model"][k].double(), v.double(), atol=2e-5, rtol=1e-4), k
        assert torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]), k
    # rank 0 alone wrote the experiment's files
    assert load_checkpoint(tmp_path / "exp" / "ddp" / "checkpoints" / "last.pth")["global_step"] == 2 * 4


def test_masks_identical_on_both_ranks_after_condensation(tmp_path, config):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config("cdn", model="condensenet_50", model_args={"stages": [2, 2], "growth": [4, 4]},
                 max_epoch=2)
    r = torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "train")
    assert "pruning event" in r.stderr
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    assert ranks[0]["masks"], "the model has condensation masks"
    for k, mask in ranks[0]["masks"].items():
        assert torch.equal(mask, ranks[1]["masks"][k]), k
        assert mask.mean().item() == pytest.approx(0.25), k   # C = 4: all three events applied


def test_distributed_validation_counts_every_sample_once(tmp_path, capsys, config):
    path = config("val", max_epoch=1)
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
    cfg = config("val", max_epoch=1, checkpoint=str(ckpt))
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "validate")
    for r in (0, 1):
        got = torch.load(out / f"rank{r}.pth")["val"]
        assert got["count"] == 37
        assert got["top1"] == pytest.approx(expected["top1"], abs=1e-9)
        assert got["top5"] == pytest.approx(expected["top5"], abs=1e-9)


def test_killing_one_rank_stops_the_launcher(tmp_path, config):
    cfg = config("kill", max_epoch=10000, synthetic_train_size=512, dist_timeout=30)
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), cfg, "--nproc", "2"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, workers = time.time() + 120, []
        while time.time() < deadline and not (tmp_path / "exp" / "kill" / "metrics.csv").exists():
            time.sleep(0.5)
        workers = children(proc.pid)      # the launcher runs torchrun in its own process
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        start = time.time()
        code = proc.wait(timeout=90)
        assert code != 0
        assert time.time() - start < 90
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_nan_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, config):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config("nan", max_epoch=3, log_interval=2, dist_timeout=30)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "nan")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for r in ranks:
        assert r["error"] and "NaN or infinite" in r["error"] and "iteration 4" in r["error"], r
    assert ranks[0]["batches"] == ranks[1]["batches"] == 4       # stopped together at the log interval


def test_ranks_draw_different_dropout_masks_from_identical_weights(tmp_path, config):
    out = tmp_path / "out"
    out.mkdir()
    cfg = config("drop", model="rexnet_1_0", model_args={}, drop_rate=0.5, max_epoch=1,
                 synthetic_train_size=32, synthetic_val_size=8)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "dropout")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    for k, v in ranks[0]["initial"].items():
        assert torch.equal(v, ranks[1]["initial"][k]), k
    assert ranks[0]["first_drop"].shape == ranks[1]["first_drop"].shape
    assert not torch.equal(ranks[0]["first_drop"], ranks[1]["first_drop"])


def test_two_process_channels_last_run_has_no_grad_stride_warning(config):
    """main.py --nproc 2 on a tiny CondenseNetV2 (learned group convs and SFRs, masks in the step) in
    channels_last: the 1x1 weights' gradients are laid out as the weights, so DDP does not warn that
    "grad strides do not match bucket view strides" (it did on every rank)."""
    cfg = config("cl", model="cdnv2_110", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]},
                 synthetic_shape=[3, 32, 32], synthetic_train_size=32, synthetic_val_size=8, batch_size=8,
                 max_epoch=1, channels_last=True)
    r = subprocess.run([sys.executable, str(ROOT / "main.py"), cfg, "--nproc", "2"], cwd=ROOT,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 process(es)" in r.stderr and "epoch 1/1 |" in r.stderr, r.stderr[-3000:]
    assert "strides do not match" not in r.stderr.lower(), r.stderr[-3000:]


def test_after_a_pruning_event_every_rank_condenses_with_rank_0s_masks(tmp_path, config):
    """Rank 1 prunes from drifted weights; the event's broadcast gives it rank 0's masks, and its condensed
    forward must then gather the inputs those masks keep (its own indices were built before the broadcast)."""
    out = tmp_path / "out"
    out.mkdir()
    cfg = config("prune", model="condensenet_50", model_args={"stages": [2, 2], "growth": [4, 4]},
                 max_epoch=2)
    torchrun(ROOT / "tests" / "ddp_worker.py", cfg, out, "prune")
    ranks = [torch.load(out / f"rank{r}.pth") for r in (0, 1)]
    assert ranks[0]["keep"] and all(len(k) for k in ranks[0]["keep"].values()), "condensation finished"
    for name, keep in ranks[0]["keep"].items():
        assert torch.equal(ranks[0]["masks"][name], ranks[1]["masks"][name]), name
        assert torch.equal(keep, ranks[1]["keep"][name]), name


# ---------------------------------------------------------------------------------------------------
# main.py under two torchrun launchers (--nnodes 2, one process each) on loopback, as two machines.
#
# Node 1 gets its own exp_root (its "local disk"), so the test sees what each node writes: only node 0
# (global rank 0) may write checkpoints, metrics and logs. For the resume run node 1 gets a copy of node 0's
# checkpoints, which is what a shared file system gives every node. Checked: both launchers exit 0, the
# two-node run (sync_bn) trains the same weights as one process with the same global batch, its
# validation counts every sample once and equals a one-process validation of the same checkpoint, and
# max_epoch + 1 resumes on both nodes.
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(cfg, node1_root, *overrides, timeout=300):
    """Start both launchers at once (node 0 hosts the rendezvous); return their (code, stderr)."""
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for node in (0, 1):
        extra = [f"exp_root={json.dumps(str(node1_root))}"] if node == 1 else []
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               str(ROOT / "main.py"), cfg, "--set", *extra, *overrides]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    results = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=timeout)
            results.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (code, err) in enumerate(results):
        assert code == 0, f"node {node} exited {code}: {err[-3000:]}"
    return results


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_two_nodes_train_validate_and_resume(tmp_path, config):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    cfg = config("mn", exp_root=str(node0), sync_bn=True)
    _two_nodes(cfg, node1, "max_epoch=2")
    ckpts = node0 / "mn" / "checkpoints"
    state = load_checkpoint(ckpts / "last.pth")
    assert state["epoch"] == 2 and state["global_step"] == 2 * 4       # 64 samples / global batch 16
    assert _files(ckpts) == ["best.pth", "last.pth"]                     # written once, nothing half-written
    assert _files(node1) == [], "only global rank 0 writes"

    # the same global batch in one process (SyncBatchNorm makes the two-node BN statistics global)
    single_cfg = config("single", exp_root=str(tmp_path / "single"), sync_bn=True)
    assert main.main([single_cfg]) == 0
    single = load_checkpoint(tmp_path / "single" / "single" / "checkpoints" / "last.pth")["model"]
    for k, v in single.items():
        assert torch.allclose(state["model"][k].double(), v.double(), atol=2e-5, rtol=1e-4), k

    # validation: the two-node epoch-2 row counts all 37 samples and equals one process on the checkpoint
    with open(node0 / "mn" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert main.main([cfg, "--mode", "validate", "--checkpoint", str(ckpts / "last.pth"),
                      "--set", "use_ema_weights=false"]) == 0
    with open(node0 / "mn" / "out" / "per_class_accuracy.csv") as f:
        per_class = list(csv.DictReader(f))
    total = sum(int(r["total"]) for r in per_class)
    assert total == 37
    top1 = 100.0 * sum(int(r["correct"]) for r in per_class) / total
    assert float(rows[-1]["val_top1"]) == pytest.approx(top1, rel=1e-5)

    # resume on both nodes: node 1 sees node 0's checkpoints (a shared file system)
    shutil.copytree(ckpts, node1 / "mn" / "checkpoints")
    before = {name: (node1 / "mn" / "checkpoints" / name).read_bytes() for name in ("last.pth", "best.pth")}
    _, err = _two_nodes(cfg, node1, "max_epoch=3")[0]
    assert "resumed from" in err and "epoch 3" in err
    state = load_checkpoint(ckpts / "last.pth")
    assert state["epoch"] == 3 and state["global_step"] == 3 * 4
    with open(node0 / "mn" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    after = {name: (node1 / "mn" / "checkpoints" / name).read_bytes() for name in before}
    assert after == before, "node 1 must not write checkpoints"
