"""The real CIFAR-10 (built from ../shared): a short DenseNet-BC run through run.sh learns."""
import csv
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_densenet_one_short_epoch_beats_chance(cifar10_root, tmp_path):
    cmd = ["sh", str(ROOT / "run.sh"), str(ROOT / "configs" / "densenet" / "densenet_bc_100_cifar10.json"), "--set",
           "max_epoch=1", f"data_root={cifar10_root}", f"exp_root={tmp_path}", "device=cpu",
           "train_subset=4000", "val_subset=2000", "batch_size=64", "lr=0.1",
           "model_args.stages=[3,3,3]", "model_args.growth=[12,12,12]"]
    r = subprocess.run(cmd, capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    exp = tmp_path / "densenet_bc_100_cifar10"
    assert (exp / "checkpoints" / "last.pth").exists() and (exp / "checkpoints" / "best.pth").exists()
    assert list((exp / "summaries").iterdir())
    row = list(csv.DictReader(open(exp / "metrics.csv")))[-1]
    assert "val loss" in r.stderr and "top5" in r.stderr     # the epoch line
    assert float(row["val_top1"]) > 25.0, row   # chance is 10%
    assert float(row["val_top5"]) > 70.0, row   # chance is 50%
