"""Faults: SIGTERM mid-epoch resumes exactly, SIGKILL never leaves an unreadable checkpoint, a failed
write keeps the previous checkpoint, and fuzzed configs/checkpoints only ever fail cleanly."""
import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import main
from _process_helpers import wait_for
from conftest import ROOT, TINY, checkpoint_dir
from graphs.models import create_model, load_weights
from engine.checkpoint import load_checkpoint, recovery_checkpoints
from utils.config import SCHEMA_BY_NAME, validate
from utils.errors import CheckpointError, ConfigError, UserError


@pytest.fixture
def config(tiny_config):
    """The tiny config, deterministic, 20 steps an epoch for 2 epochs: long enough to stop it mid-epoch."""
    return lambda name, **changes: tiny_config(name, **{"synthetic_train_size": 320, "synthetic_val_size": 32,
                                                        "max_epoch": 2, "deterministic": True, **changes})


def start(path):
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), path], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(tmp_path, config):
    assert main.main([config("ref", recovery_every=1, recovery_keep=1)]) == 0
    expected = load_checkpoint(checkpoint_dir(tmp_path, "ref") / "last.pth")["model"]

    path = config("int", recovery_every=1, recovery_keep=1)
    proc = start(path)
    # recovery_keep=1 replaces the file every step, so look for any recovery checkpoint, not one name
    assert wait_for(lambda: recovery_checkpoints(checkpoint_dir(tmp_path, "int")) or proc.poll() is not None)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "checkpoint is saved" in err
    state = load_checkpoint(checkpoint_dir(tmp_path, "int") / "last.pth")
    assert 0 < state["batch"] < 20, "stopped mid-epoch"
    assert main.main([path]) == 0
    resumed = load_checkpoint(checkpoint_dir(tmp_path, "int") / "last.pth")["model"]
    for k in expected:
        assert torch.equal(resumed[k], expected[k]), k


@pytest.mark.slow
def test_sigkill_at_random_moments_never_loses_a_readable_checkpoint(tmp_path, config):
    rng = random.Random(0)
    # far more epochs than 16 short runs can train, so every run is killed, however fast the machine
    path = config("kill", max_epoch=500, recovery_every=2, recovery_keep=2)
    folder = checkpoint_dir(tmp_path, "kill")
    for _ in range(16):
        proc = start(path)
        # kill at a random moment: during start-up, training, or a checkpoint write
        time.sleep(rng.uniform(1.5, 4.0))
        assert proc.poll() is None, f"training ended before it was killed: {proc.communicate()[1][-2000:]}"
        proc.kill()
        proc.wait()
        for p in [folder / "last.pth", *map(type(folder), recovery_checkpoints(folder))]:
            if p.exists():
                load_checkpoint(p)  # every checkpoint on disk is complete
    # resume from whatever survived and finish one more epoch
    reached = load_checkpoint(folder / "last.pth")["epoch"] if (folder / "last.pth").exists() else 0
    assert main.main([path, "--set", f"max_epoch={reached + 1}"]) == 0
    assert load_checkpoint(folder / "last.pth")["epoch"] == reached + 1
    assert not [f for f in os.listdir(folder) if ".tmp-" in f], "stale temporary files are cleaned up"


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch, capsys, config):
    path = config("disk", max_epoch=1, synthetic_train_size=32)
    assert main.main([path]) == 0
    last = checkpoint_dir(tmp_path, "disk") / "last.pth"
    before = last.read_bytes()

    def full_disk(obj, f, *a, **k):
        f.write(b"partial data")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    capsys.readouterr()
    assert main.main([config("disk", max_epoch=2, synthetic_train_size=32)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and "No space left on device" in err
    assert "previous file is intact" in err
    assert last.read_bytes() == before
    load_checkpoint(last)
    assert not [f for f in os.listdir(last.parent) if ".tmp-" in f]


def test_corrupt_newest_checkpoint_falls_back_to_recovery(tmp_path, capsys, config):
    path = config("fall", max_epoch=1, recovery_every=4, recovery_keep=3)
    assert main.main([path]) == 0
    folder = checkpoint_dir(tmp_path, "fall")
    (folder / "last.pth").write_bytes((folder / "last.pth").read_bytes()[:1000])
    capsys.readouterr()     # best.pth (the same epoch-1 position) is the newest readable one
    assert main.main([path]) == 0
    assert f"{folder / 'last.pth'} could not be read; resuming from {folder / 'best.pth'}" in capsys.readouterr().err
    (folder / "best.pth").write_bytes((folder / "best.pth").read_bytes()[:1000])
    newest = recovery_checkpoints(folder)[0]
    assert main.main([config("fall", max_epoch=2, recovery_every=4, recovery_keep=3)]) == 0
    err = capsys.readouterr().err
    assert f"{folder / 'last.pth'}, {folder / 'best.pth'} could not be read; resuming from {newest}" in err, err


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
keys = st.sampled_from(sorted(SCHEMA_BY_NAME)) | st.text(max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=8), st.booleans())
def test_fuzz_config_validation_only_succeeds_or_fails_cleanly(data, with_base):
    if with_base:
        data = {**TINY, "exp_name": "f", **data}
    try:
        validate(data)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_fuzz_checkpoint_bytes_only_fail_cleanly(tmp_path, blob):
    p = tmp_path / "random.pth"
    p.write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_checkpoint(p)
    with pytest.raises(CheckpointError):
        load_weights(create_model("densenet_bc_100", stages=(1, 1), growth=(2, 2)), str(p))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_truncated_and_flipped_checkpoints(tmp_path, data):
    model = create_model("densenet_bc_100", stages=(1, 1), growth=(2, 2))
    good = tmp_path / "good.pth"
    if not good.exists():
        torch.save({"model": model.state_dict()}, good)
    blob = bytearray(good.read_bytes())
    cut = data.draw(st.integers(0, len(blob) - 1))
    flips = data.draw(st.lists(st.integers(0, len(blob) - 1), max_size=4))
    blob = blob[:cut] if data.draw(st.booleans()) else blob
    for i in flips:
        if i < len(blob):
            blob[i] ^= 0xFF
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(blob))
    try:
        load_weights(model, str(bad))
    except UserError as e:
        assert "\n" not in str(e)
