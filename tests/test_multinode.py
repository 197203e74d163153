"""main.py under two torchrun launchers (``--nnodes 2``, one process each) on loopback, as two machines.

Node 1 gets its own ``exp_root`` (its "local disk"), so the test sees what each node writes: only node 0
(global rank 0) may write checkpoints, metrics and logs. For the resume run node 1 gets a copy of node 0's
checkpoints, which is what a shared file system gives every node. Checked: both launchers exit 0, the
two-node run (sync_bn) trains the same weights as one process with the same global batch, its
validation counts every sample once and equals a one-process validation of the same checkpoint, and
``max_epoch + 1`` resumes on both nodes.
"""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch

import main
from tests.conftest import ROOT
from engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

BASE = {"agent": "ClassificationAgent", "model": "densenet_bc_100", "dataset": "synthetic", "num_classes": 4,
        "synthetic_train_size": 64, "synthetic_val_size": 37, "synthetic_shape": [3, 16, 16],
        "model_args": {"stages": [2, 2], "growth": [4, 4]}, "batch_size": 16, "val_batch_size": 8,
        "max_epoch": 2, "lr": 0.05, "device": "cpu", "hflip": 0.0, "seed": 1, "log_interval": 1,
        "sync_bn": True}


def _config(tmp_path, name, **changes):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**BASE, "exp_name": name, "exp_root": str(tmp_path / "node0"), **changes}))
    return str(path)


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


def test_two_nodes_train_validate_and_resume(tmp_path):
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    cfg = _config(tmp_path, "mn")
    _two_nodes(cfg, node1, "max_epoch=2")
    ckpts = node0 / "mn" / "checkpoints"
    state = load_checkpoint(ckpts / "last.pth")
    assert state["epoch"] == 2 and state["global_step"] == 2 * 4       # 64 samples / global batch 16
    assert _files(ckpts) == ["best.pth", "last.pth"]                     # written once, nothing half-written
    assert _files(node1) == [], "only global rank 0 writes"

    # the same global batch in one process (SyncBatchNorm makes the two-node BN statistics global)
    single_cfg = _config(tmp_path, "single", exp_root=str(tmp_path / "single"))
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
