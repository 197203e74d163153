"""--mode validate / predict / export / benchmark / visualize / convert / flops through main.py."""
import csv
import json
import pickle

import numpy as np
import pytest
from PIL import Image

import main


@pytest.fixture
def config(tiny_config):
    """The tiny config on 32x32 images, one dense layer a stage, trained for 2 epochs."""
    return lambda name="m", **changes: tiny_config(name, **{
        "synthetic_train_size": 48, "synthetic_val_size": 24, "synthetic_shape": [3, 32, 32],
        "model_args": {"stages": [1, 1], "growth": [4, 4]}, "max_epoch": 2, **changes})


def run(capsys, argv):
    code = main.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return captured.out, captured.err


def is_png(path):
    data = open(path, "rb").read()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def write_cifar(root, n=40):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                     "ship", "truck"]}, f)
    return root


def write_images(folder, n=3, size=48):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def test_train_writes_curves_then_validate_writes_per_class_and_confusion(tmp_path, capsys, config):
    path = config()
    run(capsys, [path])
    out = tmp_path / "exp" / "m" / "out"
    assert is_png(out / "training_curves.png")
    _, err = run(capsys, [path, "--mode", "validate"])
    assert "top-1" in err
    rows = list(csv.DictReader(open(out / "per_class_accuracy.csv")))
    assert len(rows) == 4 and sum(int(r["total"]) for r in rows) == 24
    assert is_png(out / "confusion_matrix.png")
    (out / "training_curves.png").unlink()
    run(capsys, [path, "--mode", "visualize"])
    assert is_png(out / "training_curves.png")


def test_validate_on_cifar_batches_written_here(tmp_path, capsys, config):
    root = write_cifar(tmp_path / "cifar")
    path = config(dataset="cifar10", num_classes=None, data_root=str(root), max_epoch=1)
    run(capsys, [path])
    _, err = run(capsys, [path, "--mode", "validate"])
    assert "(40 images)" in err
    names = [r["class_name"] for r in csv.DictReader(open(tmp_path / "exp" / "m" / "out" / "per_class_accuracy.csv"))]
    assert names[:2] == ["airplane", "automobile"]


def test_validate_on_an_imagefolder_tree(tmp_path, capsys, config):
    for split in ("train", "val"):
        for cls in ("cat", "dog", "fox"):
            write_images(tmp_path / "tree" / split / cls, n=2)
    path = config(dataset="imagenet", num_classes=3, data_root=str(tmp_path / "tree"), num_workers=0,
                  model_args={"stages": [1, 1], "growth": [4, 4], "data": "imagenet"}, input_size=64, max_epoch=1)
    run(capsys, [path])
    _, err = run(capsys, [path, "--mode", "validate"])
    assert "(6 images)" in err
    names = [r["class_name"] for r in csv.DictReader(open(tmp_path / "exp" / "m" / "out" / "per_class_accuracy.csv"))]
    assert names == ["cat", "dog", "fox"]


def test_predict_prints_five_names_per_image_even_without_checkpoint(tmp_path, capsys, config):
    images = write_images(tmp_path / "imgs")
    path = config(dataset="cifar10", num_classes=None, data_root=str(tmp_path / "none"))
    out, err = run(capsys, [path, "--mode", "predict", "--images", *images])
    assert "RANDOM" in err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    cifar_names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    for line, image in zip(lines, images):
        assert line.startswith(image)
        names = [part.rsplit(" (", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
        assert len(names) == 5 and set(names) <= cifar_names


def test_export_writes_onnx_and_torchscript_for_a_converted_condensenet(tmp_path, capsys, config):
    path = config(model="condensenet_50", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]})
    _, err = run(capsys, [path, "--mode", "export"])
    out = tmp_path / "exp" / "m" / "out"
    assert (out / "m.onnx").stat().st_size > 1000 and (out / "m.torchscript.pt").stat().st_size > 1000
    assert err.count("max |difference| to PyTorch") == 2


def test_benchmark_emits_json_for_training_time_converted_and_fused_models(tmp_path, capsys, config):
    path = config(model="condensenet_50", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]},
                  benchmark_batch_size=4, benchmark_runtimes=[])     # runtimes: tests/deploy/test_deploy.py
    out, _ = run(capsys, [path, "--mode", "benchmark"])
    data = json.loads((tmp_path / "exp" / "m" / "out" / "benchmark.json").read_text())
    rows = data["rows"]
    assert [r["model"] for r in rows] == ["condensenet_50 (training-time)", "condensenet_50 (converted)",
                                          "condensenet_50 (fused)"]
    for r in rows:
        assert r["latency_ms_median"] > 0 and r["throughput_img_s"] > 0 and r["num_threads"] >= 1
    assert rows[0]["train_img_s"] > 0 and rows[1]["train_img_s"] is None and rows[2]["train_img_s"] is None
    assert "|" in out and "converted" in out and "fused" in out


def test_convert_flops_and_visualize_for_a_condensenetv2(tmp_path, capsys, config):
    # seed 0: the best epoch (which convert and validate load) is the last, fully condensed one
    path = config(model="cdnv2_110", model_args={"stages": [2, 2, 2], "growth": [4, 4, 4]}, max_epoch=2, seed=0)
    _, err = run(capsys, [path])
    assert "pruning event" in err
    _, err = run(capsys, [path, "--mode", "convert"])
    assert (tmp_path / "exp" / "m" / "checkpoints" / "converted.pth").exists()
    assert "(converted)" in err and "FLOPs" in err
    _, err = run(capsys, [path, "--mode", "validate", "--checkpoint",
                          str(tmp_path / "exp" / "m" / "checkpoints" / "converted.pth")])
    converted_top1 = err.split("top-1 ")[1].split("%")[0]
    _, err = run(capsys, [path, "--mode", "validate"])
    assert err.split("top-1 ")[1].split("%")[0] == converted_top1
    run(capsys, [path, "--mode", "visualize"])
    out = tmp_path / "exp" / "m" / "out"
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len([p for p in pngs if "lgc" in p]) == 1 and len([p for p in pngs if "sfr" in p]) == 1, pngs
    _, err = run(capsys, [path, "--mode", "flops"])
    assert "(training-time)" in err and "(converted)" in err


@pytest.mark.slow
@pytest.mark.parametrize("model, converted", [("cdnv2_a", True), ("rexnet_1_0", False), ("condensenet_74_g8", True)])
def test_real_imagenet_sample_validate_and_predict(imagenet_sample_root, tmp_path, capsys, config, model,
                                                 converted):
    import torch
    from graphs.models import create_model
    weights = tmp_path / "weights.pth"   # plain (random) weights, as the official releases are
    torch.save(create_model(model, converted=converted).state_dict(), weights)
    path = config(model=model, model_args={}, dataset="imagenet", num_classes=None, converted=converted,
                  data_root=str(imagenet_sample_root), batch_size=50, num_workers=2, checkpoint=str(weights))
    _, err = run(capsys, [path, "--mode", "validate"])
    assert "(1000 images)" in err
    rows = list(csv.DictReader(open(tmp_path / "exp" / "m" / "out" / "per_class_accuracy.csv")))
    assert len(rows) == 1000 and rows[0]["class_name"] == "tench"
    images = sorted((imagenet_sample_root / "val").glob("*/*"))[:3]
    out, _ = run(capsys, [path, "--mode", "predict", "--images", *map(str, images)])
    assert len(out.strip().splitlines()) == 3 and all(len(l.split(": ", 1)[1].split("), ")) == 5
                                                      for l in out.strip().splitlines())
