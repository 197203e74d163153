"""Shared fixtures: the repository root on sys.path, the offline data in ../shared (skipped if absent), and
the one tiny config every whole-program test starts from (``tiny_config``, ``tiny_detection_config``)."""
import json
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


_CHILD = "CDN_TEST_CHILD"


class ModuleInOwnProcess(pytest.Item):
    """The selected tests of a module marked ``own_process``, run by a child pytest: OpenVINO's and NNCF's
    native libraries, once loaded, can crash a later in-process training run of the same interpreter."""

    def __init__(self, *, nodeids, **kwargs):
        super().__init__(**kwargs)
        self.nodeids = nodeids

    def runtest(self):
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *self.nodeids],
                           cwd=ROOT, env={**os.environ, _CHILD: "1"}, capture_output=True, text=True)
        if r.returncode != 0:
            pytest.fail(f"{len(self.nodeids)} test(s) in their own process exited {r.returncode}:\n"
                        f"{r.stdout[-6000:]}{r.stderr[-3000:]}", pytrace=False)

    def reportinfo(self):
        return self.path, 0, f"{self.name}: {len(self.nodeids)} test(s)"


@pytest.hookimpl(trylast=True)      # after -m / -k deselection: a child runs what was selected
def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where torch sees no CUDA device; the selected tests of
    a module marked ``own_process`` become one item that runs them in a child pytest."""
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it on one)")
        for item in items:
            if item.get_closest_marker("cuda") is not None:
                item.add_marker(skip)
    if os.environ.get(_CHILD):
        return
    groups = {}
    for item in items:
        if item.get_closest_marker("own_process") is not None:
            groups.setdefault(item.module, []).append(item)
    for module, members in groups.items():
        first = items.index(members[0])
        for member in members:
            items.remove(member)
        items.insert(first, ModuleInOwnProcess.from_parent(members[0].getparent(pytest.Module),
                                                          name="own_process", nodeids=[m.nodeid for m in members]))


# A classification run of a few seconds on the CPU: a 2-stage DenseNet-BC on 16x16 synthetic images.
TINY = {"agent": "ClassificationAgent", "model": "densenet_bc_100", "dataset": "synthetic", "num_classes": 4,
        "synthetic_train_size": 64, "synthetic_val_size": 16, "synthetic_shape": [3, 16, 16],
        "model_args": {"stages": [2, 2], "growth": [4, 4]}, "batch_size": 16, "max_epoch": 1, "lr": 0.05,
        "device": "cpu", "seed": 5}
# A Faster R-CNN on a CondenseNetV2 at 128 pixels, for the small COCO sets of datasets.synthetic.make_coco_set.
TINY_DETECTION = {"agent": "DetectionAgent", "model": "cdnv2_a", "dataset": "coco", "detector": "fasterrcnn",
                  "min_size": [128], "max_size": 160, "fpn_channels": 64, "batch_size": 2, "num_workers": 0,
                  "max_epoch": 1, "device": "cpu"}
DROP = object()     # a change that removes the key


def write_config(folder, name: str = "tiny", base: dict = TINY, **changes) -> str:
    """Write ``base`` with ``changes`` (``DROP`` removes a key) to ``folder/<name>.json``, experiment ``name``
    under ``folder/exp`` unless the changes say otherwise; return the path as main.py's argument."""
    data = {**base, "exp_name": name, "exp_root": str(Path(folder) / "exp"), **changes}
    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not DROP}))
    return str(path)


def checkpoint_dir(folder, name: str) -> Path:
    """The checkpoint folder of experiment ``name`` of a config written by ``write_config(folder, ...)``."""
    return Path(folder) / "exp" / name / "checkpoints"


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(name="tiny", **changes) -> path``: ``TINY`` with ``changes`` written to
    ``tmp_path/<name>.json``, its experiment folder ``tmp_path/exp/<name>``."""
    return lambda name="tiny", **changes: write_config(tmp_path, name, TINY, **changes)


@pytest.fixture
def tiny_detection_config(tmp_path):
    """``tiny_detection_config(data_root, name="det", **changes) -> path``: ``TINY_DETECTION`` on the COCO set
    at ``data_root``, written as ``tiny_config`` writes."""
    return lambda data_root, name="det", **changes: write_config(tmp_path, name, TINY_DETECTION,
                                                                 data_root=str(data_root), **changes)


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
