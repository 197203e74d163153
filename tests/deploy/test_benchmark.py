"""Benchmark utility: result fields and types, markdown table, atomic JSON, argument errors; the one timing loop."""
import json
import os
import time

import pytest
import torch

from deploy.benchmark import RESULT_FIELDS, benchmark, format_table, write_json
from deploy.timing import time_calls
from graphs.models import create_model
from utils.errors import ConfigError


def test_time_calls_times_each_call_after_untimed_warmup():
    calls = []

    def sleep_5ms():
        calls.append(time.perf_counter())
        time.sleep(0.005)
    times = time_calls(sleep_5ms, warmup=2, iters=3)
    assert len(calls) == 5 and len(times) == 3          # 2 untimed calls, then one figure per timed call
    assert all(5.0 <= t < 1000.0 for t in times)         # milliseconds, each at least the 5 ms sleep


def _tiny():
    torch.manual_seed(0)
    return create_model("densenet_bc_100", stages=(1, 1, 1), growth=(2, 2, 2))


@pytest.fixture(scope="module")
def result():
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    res = benchmark(model, batch_sizes=(1, 4), train_batch=4, warmup=1, iters=3, name="tiny")
    # the benchmark works on copies: weights, BN statistics and the mode are untouched
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    return res


def test_fields_and_types(result):
    assert set(result) == set(RESULT_FIELDS)
    for key, types in RESULT_FIELDS.items():
        assert isinstance(result[key], types), (key, result[key])
    assert result["model"] == "tiny" and result["device"] == "cpu"
    assert result["torch_version"] == torch.__version__
    assert result["num_threads"] == torch.get_num_threads()
    assert result["input_size"] == [3, 32, 32]
    assert result["latency_batch"] == 1 and result["throughput_batch"] == 4 and result["train_batch"] == 4
    assert 0 < result["latency_ms_median"] <= result["latency_ms_p90"]
    assert result["throughput_img_s"] == pytest.approx(4000.0 / result["inference"][-1]["ms_median"])
    assert result["train_img_s"] == pytest.approx(4000.0 / result["train_step_ms_median"])
    assert [r["batch"] for r in result["inference"]] == [1, 4]
    # no CPU memory figure: the resident-set peak it was read from said 0 MiB for a phase after a larger one
    assert result["infer_peak_mem_mb"] is result["train_peak_mem_mb"] is result["mem_method"] is None
    assert all(r["peak_mem_mb"] is None for r in result["inference"])
    assert result["params"] == sum(p.numel() for p in _tiny().parameters())
    json.dumps(result)  # JSON-ready


def test_table(result):
    other = dict(result, model="other", train_img_s=None, train_peak_mem_mb=None)
    table = format_table([result, other])
    lines = table.splitlines()
    assert lines[0].startswith("| model | device | threads |")
    assert set(lines[1].replace("|", "")) <= set("-:")
    assert lines[2].startswith("| tiny | cpu |") and lines[3].startswith("| other | cpu |")
    ncols = lines[0].count("|")
    assert lines[1].count("|") == lines[2].count("|") == lines[3].count("|") == ncols
    assert f"{result['latency_ms_median']:.2f}" in lines[2]
    assert "@4" in lines[2] and "| - |" in lines[3]
    assert format_table(result).splitlines()[2] == lines[2]
    assert "mem" not in lines[0] and "memory: measured on CUDA only" in table     # no CPU memory column
    cuda = dict(result, mem_method="cuda_max_memory_allocated", infer_peak_mem_mb=12.5, train_peak_mem_mb=30.0)
    lines = format_table(cuda).splitlines()
    assert "infer mem (MiB)" in lines[0] and "| 12.5 | 30.0 |" in lines[2] and "cuda_max_memory_allocated" in lines[-1]


def test_write_json_atomic(result, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text("old")
    assert write_json([result], path) == str(path)
    assert json.loads(path.read_text()) == [json.loads(json.dumps(result))]
    assert os.listdir(tmp_path) == ["bench.json"]
    with pytest.raises(ConfigError, match="does not exist"):
        write_json(result, tmp_path / "missing" / "b.json")


def test_no_training_step_and_channels_last():
    res = benchmark(_tiny(), batch_sizes=(2,), train_batch=None, warmup=0, iters=1, channels_last=True)
    assert res["train_img_s"] is None and res["train_step_ms_median"] is None
    assert res["latency_batch"] == res["throughput_batch"] == 2 and res["channels_last"] is True


def test_bad_arguments():
    model = _tiny()
    with pytest.raises(ConfigError, match="device"):
        benchmark(model, device="tpu9")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            benchmark(model, device="cuda")
    with pytest.raises(ConfigError, match="amp"):
        benchmark(model, amp="int8")
    with pytest.raises(ConfigError, match="batch_sizes"):
        benchmark(model, batch_sizes=())
    with pytest.raises(ConfigError, match="iters"):
        benchmark(model, iters=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_memory_method():
    res = benchmark(_tiny(), device="cuda", batch_sizes=(1, 4), train_batch=4, warmup=1, iters=2, amp="fp16")
    assert res["mem_method"] == "cuda_max_memory_allocated" and res["amp"] == "float16"
    assert res["train_peak_mem_mb"] > 0


def test_benchmark_params_of_each_form_are_what_flops_prints(tmp_path, capsys, tiny_config):
    """--mode benchmark and --mode flops through main.py on a tiny CondenseNet give every form the same
    params: the training-time model is charged its condensed weights (= the unpruned converted model's
    parameters), the converted model its parameters (classifier pruned), the fused one its parameters."""
    import re
    import main
    args = {"stages": (1, 1, 1), "growth": (4, 4, 4)}
    path = tiny_config("b", model="condensenet_50", model_args=args, synthetic_shape=[3, 32, 32],
                       benchmark_batch_size=2, benchmark_runtimes=[])

    def run(mode):
        code = main.main([path, "--mode", mode])
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        return captured
    printed = {form: int(n.replace(",", "")) for form, n in
               re.findall(r"condensenet_50 \(([\w-]+)\) at 32x32: .*M params \(([\d,]+)\)", run("flops").err)}
    out = run("benchmark").out
    rows = json.loads((tmp_path / "exp" / "b" / "out" / "benchmark.json").read_text())["rows"]
    timed = {re.search(r"\((.+)\)$", r["model"]).group(1): r["params"] for r in rows}
    model = create_model("condensenet_50", num_classes=4, **args)
    model.set_progress(1.0)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    expected = {"training-time": count(model.convert(prune_classifier=False)), "converted": count(model.convert()),
                "fused": count(model.convert().fuse())}
    assert len(set(expected.values())) == 3 and expected["training-time"] < count(model)   # three different counts
    assert printed == timed == expected
    assert "papers' counting rule" in out and "mem (MiB)" not in out


@pytest.mark.parametrize("enabled", [True, False])
def test_benchmark_training_step_follows_memory_efficient(tiny_config, monkeypatch, enabled):
    """The training row runs the dense layers as training would: through the recomputing BNActConv when
    memory_efficient is on (the default), the plain layers when it is off."""
    import main
    from graphs.layers import efficient
    calls = []
    original = efficient.BNActConv.forward

    def counted(ctx, *args):
        calls.append(1)
        return original(ctx, *args)
    monkeypatch.setattr(efficient.BNActConv, "forward", staticmethod(counted))
    path = tiny_config("m", model="condensenet_50", model_args={"stages": [1, 1, 1], "growth": [4, 4, 4]},
                       synthetic_shape=[3, 32, 32], benchmark_batch_size=2, benchmark_runtimes=[],
                       memory_efficient=enabled)
    assert main.main([path, "--mode", "benchmark"]) == 0
    assert bool(calls) == enabled
