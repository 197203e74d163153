"""Shared fixtures: the repository root on sys.path, the offline data in ../shared (skipped if absent)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it on one)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def tiny_settings(**keys):
    """The resolved config (``utils.config.resolve``: defaults filled in, checked) of ``keys``, with the
    required keys of a small run added; a ``coco`` data set gets the DetectionAgent it needs."""
    from utils.config import resolve
    agent = "DetectionAgent" if keys.get("dataset") == "coco" else "ClassificationAgent"
    return resolve({"exp_name": "t", "agent": agent, "model": "densenet_bc_100", "dataset": "synthetic", **keys})


def shared_path(*parts):
    """A path under ../shared, or skip the test when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is not available (set SHARED_DIR or run beside ../shared)")
    return p


def _make_shared_data(tmp_path_factory, tool, name):
    """Run ``../shared/tools/<tool> DEST`` into a fresh temp folder and return it."""
    dest = tmp_path_factory.mktemp(name)
    subprocess.run([sys.executable, str(shared_path("tools", tool)), str(dest)], check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    """The real CIFAR-10 (python batches) built from ../shared into a temp dir, once per session."""
    return _make_shared_data(tmp_path_factory, "make_cifar10.py", "cifar")


@pytest.fixture(scope="session")
def imagenet_sample_root(tmp_path_factory):
    """1000 real ImageNet images (one per class) as train/ and val/ ImageFolder trees."""
    return _make_shared_data(tmp_path_factory, "make_imagenet_sample.py", "imagenet")


@pytest.fixture
def fixture_dir():
    """The official CondenseNet-50 fixture directory."""
    return shared_path("fixtures", "official", "condensenet50_cifar10")


def run_interrupted_after_epoch_1(tmp_path, config_path, checkpoints, monkeypatch):
    """Train ``config_path`` through main.py, stopped (Ctrl-C) right after epoch 1 is saved, then run it
    again from that epoch-1 checkpoint to the end: the resumed half of an exact-resume test."""
    import shutil

    import main
    from engine.checkpoint import CheckpointManager, load_checkpoint
    snapshot = tmp_path / "after_epoch1.pth"
    original = CheckpointManager.save

    def save_then_stop(self, payload, best=False):
        original(self, payload, best)
        if load_checkpoint(self.path("last.pth"))["epoch"] == 1:
            shutil.copy(self.path("last.pth"), snapshot)
            raise KeyboardInterrupt

    monkeypatch.setattr(CheckpointManager, "save", save_then_stop)
    assert main.main([config_path]) == 130
    monkeypatch.setattr(CheckpointManager, "save", original)
    shutil.copy(snapshot, checkpoints / "last.pth")
    assert main.main([config_path]) == 0
