"""End to end: main.py trains on synthetic data, checkpoints, logs, resumes exactly and validates."""
import csv
import json
import os

import pytest
import torch

import main
from conftest import run_interrupted_after_epoch_1
from agents import ClassificationAgent
from engine.checkpoint import load_checkpoint
from utils.config import load_config


@pytest.fixture
def make_config(tiny_config):
    """The tiny config, 3 epochs of 6 steps, in the experiment "tiny" unless ``exp_name`` says otherwise."""
    return lambda name="c", **changes: tiny_config(name, **{
        "exp_name": "tiny", "synthetic_train_size": 96, "synthetic_val_size": 40, "max_epoch": 3, "log_interval": 2,
        "seed": 3, **changes})


def final_weights(tmp_path, exp_name):
    state = load_checkpoint(tmp_path / "exp" / exp_name / "checkpoints" / "last.pth")
    return state["model"]


def test_train_end_to_end_writes_everything(tmp_path, capsys, make_config):
    path = make_config(ema=True, ema_decay=0.8, validate_every=2)
    assert main.main([path]) == 0
    exp = tmp_path / "exp" / "tiny"
    assert (exp / "checkpoints" / "last.pth").exists() and (exp / "checkpoints" / "best.pth").exists()
    assert json.loads((exp / "config.json").read_text())["batch_size"] == 16
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(exp / "summaries"))
    assert (exp / "logs" / "train.log").read_text().count("epoch 3/3") == 1
    rows = list(csv.DictReader(open(exp / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["val_top1"] == "" and rows[1]["val_top1"] != "" and rows[2]["ema_val_top1"] != ""
    state = load_checkpoint(exp / "checkpoints" / "last.pth")
    assert state["epoch"] == 3 and state["batch"] == 0 and state["global_step"] == 3 * 6
    assert state["ema"] is not None and state["config"]["exp_name"] == "tiny"
    # the synthetic classes are learnable: three short epochs beat chance (25%) clearly
    assert float(rows[-1]["val_top1"]) > 50


def test_resume_after_epoch_gives_identical_weights(tmp_path, monkeypatch, make_config):
    reference = make_config("ref", exp_name="ref", ema=True, label_smoothing=0.1)
    assert main.main([reference]) == 0
    expected = final_weights(tmp_path, "ref")

    # the same run, stopped after epoch 1 (its checkpoint kept aside), then resumed to the end
    path = make_config("int", exp_name="int", ema=True, label_smoothing=0.1)
    run_interrupted_after_epoch_1(tmp_path, path, tmp_path / "exp" / "int" / "checkpoints", monkeypatch)
    resumed = final_weights(tmp_path, "int")
    assert resumed.keys() == expected.keys()
    for k in expected:
        assert torch.equal(resumed[k], expected[k]), k


def test_resume_from_explicit_path_and_nothing_left(tmp_path, capsys, make_config):
    path = make_config(max_epoch=1)
    assert main.main([path]) == 0
    last = tmp_path / "exp" / "tiny" / "checkpoints" / "last.pth"
    path2 = make_config("c2", exp_name="other", max_epoch=2, resume=str(last))
    capsys.readouterr()
    assert main.main([path2]) == 0
    assert "resumed from" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "exp" / "other" / "checkpoints" / "last.pth")["epoch"] == 2


def test_validate_mode_and_checkpoint_of_another_model(tmp_path, capsys, make_config):
    path = make_config(max_epoch=1)
    assert main.main([path]) == 0
    capsys.readouterr()
    assert main.main([path, "--mode", "validate"]) == 0
    err = capsys.readouterr().err
    assert "best.pth: top-1" in err and "top-5" in err
    ckpt = tmp_path / "exp" / "tiny" / "checkpoints" / "last.pth"
    assert main.main([path, "--mode", "validate", "--checkpoint", str(ckpt)]) == 0
    assert "last.pth: top-1" in capsys.readouterr().err
    # a checkpoint of another model is one sentence
    other = make_config("o", model_args={"stages": [2, 2], "growth": [6, 6]})
    capsys.readouterr()
    assert main.main([other, "--mode", "validate", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "remove model_args from the config to use the checkpoint's" in err and "Traceback" not in err
    classes = make_config("k", num_classes=5)
    assert main.main([classes, "--mode", "validate", "--checkpoint", str(ckpt)]) == 2
    assert "set num_classes to null" in capsys.readouterr().err


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path, capsys, make_config):
    path = make_config(max_epoch=2)
    assert main.main([path]) == 0
    last = tmp_path / "exp" / "tiny" / "checkpoints" / "last.pth"
    before = last.read_bytes()
    path = make_config(max_epoch=4, lr=1e30)
    capsys.readouterr()
    assert main.main([path]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "is intact" in err
    assert last.read_bytes() == before


def test_multistep_warmup_schedule_and_ndim2_decay(make_config):
    cfg = load_config(make_config(lr_schedule="multistep", lr_milestones=[1, 2], warmup_epochs=0.5,
                                  warmup_lr=0.01, weight_decay_mode="ndim2"))
    trainer = ClassificationAgent(cfg).build_trainer()
    s = trainer.schedule
    assert s.lr_at(0) == pytest.approx(0.01) and s.lr_at(3) == pytest.approx(0.05)
    assert s.lr_at(6) == pytest.approx(0.005) and s.lr_at(12) == pytest.approx(0.0005)
    groups = trainer.optimizer.param_groups
    assert groups[1]["weight_decay"] == 0 and all(p.ndim < 2 for p in groups[1]["params"])
    assert all(p.ndim >= 2 for p in groups[0]["params"])
