"""Fine-tuning end to end through main.py: pretrain, then fine-tune on a folder data set of another
class count from the checkpoint (a path) — the condensation state is kept and the head is new. Then the
checkpoint is all a user needs: fine-tune on a folder from a pretrained FILE, delete the folder and the file,
and every mode still runs from the checkpoint with the same command line."""
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import main
from conftest import ROOT, write_config
from engine.checkpoint import load_checkpoint
from graphs.models import create_model

# changes to the tiny config: a CondenseNet-50 (C = 4) trained until it is fully condensed
PRETRAIN = {"model": "condensenet_50", "model_args": {"stages": [2, 2, 2]}, "synthetic_train_size": 32,
            "synthetic_shape": [3, 32, 32], "max_epoch": 2, "seed": 1}
CLASSES = ("cat", "dog", "emu")


def _folder(root, n_train=4, n_val=2, seed=0):
    """train/ and val/ with three classes of small real PNG files (a colour per class, plus noise)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = np.full((40, 48, 3), 60 * (c + 1), np.uint8) + rng.integers(0, 40, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def _run(*args):
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_finetune_from_a_checkpoint_on_a_folder_keeps_backbone_and_masks(tmp_path, capsys, tiny_config):
    assert main.main([tiny_config("pre", **PRETRAIN)]) == 0
    source = tmp_path / "exp" / "pre" / "checkpoints" / "last.pth"
    pre = load_checkpoint(source)["model"]
    assert all(float(v) == 3 for k, v in pre.items() if k.endswith("._stage"))      # C = 4: condensed
    data = _folder(tmp_path / "images")
    fine = {**PRETRAIN, "dataset": "folder", "data_root": str(data), "num_classes": None,
            "pretrained": str(source), "lr": 0.0, "max_epoch": 1, "batch_size": 4, "num_workers": 0,
            "freeze_backbone_epochs": 0}
    capsys.readouterr()
    assert main.main([tiny_config("fine", **fine)]) == 0
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
    code = main.main([tiny_config("fine", **fine), "--mode", "predict", "--images", str(data / "val" / "dog")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 2 and all(n in out for n in CLASSES), out


def test_unreachable_pretrained_url_is_one_sentence(tmp_path, capsys, tiny_config):
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/weights/rexnet.pth"
    capsys.readouterr()
    assert main.main([tiny_config("url", **{**PRETRAIN, "pretrained": url, "max_epoch": 1})]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and url in err and "checkpoints" in err, err
    assert not (tmp_path / "exp" / "url" / "checkpoints" / "last.pth").exists()


# ---------------------------------------------------------------- a self-contained checkpoint
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """(config path, checkpoint, tmp): a fine-tuned folder model whose data and pretrained file are gone."""
    tmp = tmp_path_factory.mktemp("self_contained")
    assert main.main([write_config(tmp, "pre", **PRETRAIN)]) == 0
    weights = tmp / "downloaded.pth"        # a pretrained *file*, as a user gets one
    shutil.copy(tmp / "exp" / "pre" / "checkpoints" / "last.pth", weights)
    data = _folder(tmp / "my_images")
    config = write_config(tmp, "fine", **{
        **PRETRAIN, "dataset": "folder", "data_root": str(data), "num_classes": None, "pretrained": str(weights),
        "max_epoch": 1, "batch_size": 4, "num_workers": 0, "benchmark_runtimes": [], "export_formats": ["onnx"]})
    assert main.main([config]) == 0
    checkpoint = tmp / "exp" / "fine" / "checkpoints" / "last.pth"
    state = load_checkpoint(checkpoint)
    assert state["class_names"] == list(CLASSES)
    # the model's CIFAR geometry, with the ImageNet statistics the folder set falls back to
    assert state["eval"] == {"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear",
                             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    shutil.rmtree(data)
    weights.unlink()
    return config, checkpoint, tmp


@pytest.mark.slow
def test_predict_and_export_need_only_the_checkpoint(finetuned):
    config, checkpoint, tmp = finetuned
    photos = tmp / "photos"
    photos.mkdir()
    Image.fromarray(np.full((30, 50, 3), 120, np.uint8)).save(photos / "a.jpg")
    r = _run(config, "--mode", "predict", "--checkpoint", checkpoint, "--images", photos)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"predicting with {checkpoint}" in r.stderr
    assert "a.jpg: " in r.stdout and all(name in r.stdout for name in CLASSES), r.stdout
    r = _run(config, "--mode", "export", "--checkpoint", checkpoint)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp / "exp" / "fine" / "out" / "fine.onnx").is_file()


@pytest.mark.slow
def test_other_modes_and_other_data_need_only_the_checkpoint(finetuned, capsys):
    config, checkpoint, tmp = finetuned
    for mode in ("flops", "convert", "visualize", "benchmark"):
        assert main.main([config, "--mode", mode, "--checkpoint", str(checkpoint)]) == 0, mode
    other = _folder(tmp / "other_images", n_train=1, n_val=3, seed=1)   # the same classes, other photos
    capsys.readouterr()
    assert main.main([config, "--mode", "validate", "--checkpoint", str(checkpoint),
                      "--set", f"data_root={other}"]) == 0
    assert "(9 images)" in capsys.readouterr().err
    per_class = (tmp / "exp" / "fine" / "out" / "per_class_accuracy.csv").read_text()
    assert all(f",{name}," in per_class for name in CLASSES), per_class


def test_a_config_that_contradicts_the_checkpoint_is_one_sentence(finetuned, capsys):
    config, checkpoint, _ = finetuned
    for change, words in ((["--set", "num_classes=5"], ("3 classes", "num_classes 5")),
                          (["--set", "model=condensenet_86"], ("'condensenet_50'", "'condensenet_86'")),
                          (["--set", "model_args.stages=[4,4,4]"], ("[2, 2, 2]", "[4, 4, 4]"))):
        capsys.readouterr()
        assert main.main([config, "--mode", "predict", "--checkpoint", str(checkpoint), "--images",
                          config, *change]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and all(w in err for w in words), err


def test_a_checkpoint_folder_or_a_corrupt_best_is_named(finetuned, capsys):
    config, checkpoint, tmp = finetuned
    capsys.readouterr()
    assert main.main([config, "--mode", "flops", "--checkpoint", str(checkpoint.parent)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and "best.pth" in err, err
    # a corrupt best.pth beside a readable last.pth: the unreadable file and the one used are named
    best = checkpoint.parent / "best.pth"
    saved = best.read_bytes()
    try:
        best.write_bytes(saved[: len(saved) // 3])
        assert main.main([config, "--mode", "flops"]) == 0
        err = capsys.readouterr().err
        assert f"{best} could not be read" in err and f"using {checkpoint}" in err, err
    finally:
        best.write_bytes(saved)
