"""Deployment through main.py: export to ONNX / OpenVINO / int8 with the accuracy of each file, then
validate and predict on the runtimes; a deployed file that does not fit the config is one sentence."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT

MAIN = str(ROOT / "main.py")


class _Run:
    """main.py in a subprocess: OpenVINO and NNCF stay out of the test process (one segfaulted a later
    test of the same process once)."""

    def __init__(self):
        self.out = self.err = ""

    def main(self, argv):
        r = subprocess.run([sys.executable, MAIN, *argv], capture_output=True, text=True)
        self.out, self.err = r.stdout, r.stderr
        return r.returncode


main = _Run()


@pytest.fixture
def config(tiny_config):
    """A CondenseNet-50 of one layer a stage on 32x32 images, trained for 2 epochs, as experiment "dep"."""
    return lambda **changes: tiny_config("dep", **{
        "model": "condensenet_50", "model_args": {"stages": [1, 1, 1]}, "synthetic_train_size": 32,
        "synthetic_shape": [3, 32, 32], "max_epoch": 2, "seed": 2, **changes})


def test_export_runtimes_validate_and_predict(tmp_path, config):
    path = config()
    assert main.main([path]) == 0
    formats = '["onnx", "openvino", "openvino_int8", "onnx_int8"]'
    assert main.main([path, "--mode", "export", "--set", f"export_formats={formats}", "calibration_size=16"]) == 0
    out = tmp_path / "exp" / "dep" / "out"
    report = json.loads((out / "export.json").read_text())
    # the quantizers' known noise is gone (onnxruntime warned once per BatchNorm vector, torch about CUDA),
    # the project's lines are there, and NNCF's progress bars left stdout
    assert "is out-of-range for weight" not in main.err and "No CUDA runtime" not in main.err, main.err
    for f in report:
        assert f"{f}: top-1 {report[f]['val_top1']:.2f}% on 16 validation images" in main.err, main.err
    assert main.out == "", main.out
    assert set(report) == {"onnx", "openvino", "openvino_int8", "onnx_int8"}
    assert report["onnx"]["max_abs_diff"] < 1e-4 and report["openvino"]["max_abs_diff"] < 1e-4
    tops = {f: report[f]["val_top1"] for f in report}
    assert tops["onnx"] == pytest.approx(tops["openvino"], abs=1e-6)   # the same fp32 graph
    for f in ("openvino_int8", "onnx_int8"):
        assert abs(tops[f] - tops["onnx"]) <= 12.5, tops                  # 16 images: at most 2 flips
    for runtime in ("onnxruntime", "openvino"):
        assert main.main([path, "--mode", "validate", "--set", f"runtime={runtime}"]) == 0
        err = main.err
        assert f"{runtime}: top-1 {tops['onnx']:.2f}%" in err, err
    img = tmp_path / "x.png"
    from PIL import Image
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    assert main.main([path, "--mode", "predict", "--images", str(img), "--set", "runtime=openvino"]) == 0
    assert str(img) in main.out
    # a file exported for other inputs or classes is refused in one sentence
    code = main.main([path, "--mode", "validate", "--set", "runtime=onnxruntime", "num_classes=5"])
    err = main.err.strip()
    assert code == 2 and err.startswith("error: ") and "\n" not in err, err
    code = main.main([path, "--mode", "validate", "--set", "runtime=openvino",
                      f"runtime_artifact={tmp_path / 'missing.xml'}"])
    err = main.err.strip()
    assert code == 2 and "missing.xml" in err and "\n" not in err, err


def test_benchmark_times_the_runtimes_beside_rexnet_100(tmp_path, config):
    """--mode benchmark: the config's deployable model and timm's rexnet_100 on each runtime, same run."""
    path = config(benchmark_batch_size=4)
    runtimes = ["eager", "onnxruntime", "openvino", "openvino_int8"]
    assert main.main([path, "--mode", "benchmark", "--set", f"benchmark_runtimes={json.dumps(runtimes)}",
                      "runtime_threads=1"]) == 0, main.err[-2000:]
    report = json.loads((tmp_path / "exp" / "dep" / "out" / "benchmark.json").read_text())["runtimes"]
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == {"condensenet_50", "rexnet_100"} and report["threads"] == 1
    for row in rows.values():
        assert set(row["variants"]) == set(runtimes)
        for v in runtimes:
            assert len(row["variants"][v]["runs_ms"]) == report["rounds"] and row["variants"][v]["ms"] > 0
    assert rows["rexnet_100"]["ratio"] == 1.0 and rows["rexnet_100"]["flops"] == pytest.approx(398e6, rel=0.01)
    assert rows["condensenet_50"]["ratio"] > 0 and "GFLOP/s" in main.out and "peer" in main.out
    assert not [p for p in (tmp_path / "exp" / "dep" / "out").iterdir() if p.is_dir()]   # temporary files gone


def test_benchmark_refuses_an_unknown_runtime(config):
    assert main.main([config(), "--mode", "benchmark", "--set", 'benchmark_runtimes=["tensorrt"]']) == 2
    assert main.err.strip().count("\n") == 0 and "benchmark_runtimes may hold" in main.err
