"""Fine-tuning end to end through main.py: pretrain, then fine-tune on a folder data set of another
class count from the checkpoint (a path) — the condensation state is kept and the head is new."""
import json
import socket

import numpy as np
import torch
from PIL import Image

import main
from engine.checkpoint import load_checkpoint
from graphs.models import create_model

PRETRAIN = {"exp_name": "pre", "agent": "ClassificationAgent", "model": "condensenet_50", "dataset": "synthetic",
            "num_classes": 4, "synthetic_train_size": 32, "synthetic_val_size": 16, "synthetic_shape": [3, 32, 32],
            "model_args": {"stages": [2, 2, 2]}, "batch_size": 16, "max_epoch": 2, "lr": 0.05, "device": "cpu",
            "seed": 1}
CLASSES = ("cat", "dog", "emu")


def _folder(root):
    """train/ and val/ with three classes of small real PNG files (a colour per class, plus noise)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                base = np.zeros((32, 32, 3), np.uint8) + np.uint8(60 * (c + 1))
                noise = rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(root / split / name / f"{i}.png")
    return root


def _write(tmp_path, name, cfg):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({**cfg, "exp_root": str(tmp_path / "exp")}))
    return str(path)


def test_finetune_from_a_checkpoint_on_a_folder_keeps_backbone_and_masks(tmp_path, capsys):
    assert main.main([_write(tmp_path, "pre", PRETRAIN)]) == 0
    source = tmp_path / "exp" / "pre" / "checkpoints" / "last.pth"
    pre = load_checkpoint(source)["model"]
    assert all(float(v) == 3 for k, v in pre.items() if k.endswith("._stage"))      # C = 4: condensed
    data = _folder(tmp_path / "images")
    fine = {**PRETRAIN, "exp_name": "fine", "dataset": "folder", "data_root": str(data), "num_classes": None,
            "pretrained": str(source), "lr": 0.0, "max_epoch": 1, "batch_size": 4, "num_workers": 0,
            "freeze_backbone_epochs": 0}
    capsys.readouterr()
    assert main.main([_write(tmp_path, "fine", fine)]) == 0
    err = capsys.readouterr().err
    assert "the weights have 4 classes and the model 3" in err, err
    state = load_checkpoint(tmp_path / "exp" / "fine" / "checkpoints" / "last.pth")
    assert state["class_names"] == list(CLASSES) and state["epoch"] == 1 and state["global_step"] == 3
    got = state["model"]
    assert got["classifier.weight"].shape[0] == 3 and pre["classifier.weight"].shape[0] == 4
    params = {k for k, _ in create_model("condensenet_50", stages=[2, 2, 2]).named_parameters()}
    for k in params - {"classifier.weight", "classifier.bias"}:
        assert torch.equal(got[k], pre[k]), k                      # lr 0: the backbone did not move
    for k in (k for k in pre if k.endswith(("._mask", "._stage", "._count"))):
        assert torch.equal(got[k], pre[k]), k                      # nothing pruned again
    # predict prints the folder's class names
    capsys.readouterr()
    code = main.main([_write(tmp_path, "fine", fine), "--mode", "predict", "--images", str(data / "val" / "dog")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 2 and all(n in out for n in CLASSES), out


def test_unreachable_pretrained_url_is_one_sentence(tmp_path, capsys):
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights/rexnet.pth"
    cfg = {**PRETRAIN, "exp_name": "url", "pretrained": url, "max_epoch": 1}
    capsys.readouterr()
    assert main.main([_write(tmp_path, "url", cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and url in err and "checkpoints" in err, err
    assert not (tmp_path / "exp" / "url" / "checkpoints" / "last.pth").exists()
