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
