"""Correctness of the performance features: memory-efficient training, condensed-form training,
fused inference, no host syncs in forward, and the benchmark suite's quick mode. Speed is not tested."""
import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from graphs.models import create_model
from _condense_helpers import condensed, randomize_bn
from conftest import ROOT


SMALL = {
    "condensenet_50": dict(stages=(2, 2, 2)),
    "cdnv2_110": dict(stages=(2, 2, 2)),          # HS from block 2, SE in block 3
    "densenet_bc_100": dict(stages=(2, 2, 2)),
}


def _build(name, progress=0.0, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    m = create_model(name, **SMALL.get(name, {})).to(dtype)
    randomize_bn(m, seed)
    if progress and hasattr(m, "set_progress"):
        m.set_progress(progress)
    return m.train()


def _batch(n=4, res=32, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, res, res, generator=g).to(dtype), torch.randint(0, 10, (n,), generator=g)


def _step(model, x, y):
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out


@pytest.mark.parametrize("name,progress", [("condensenet_50", 0.0), ("condensenet_50", 0.3),
                                           ("condensenet_50", 1.0), ("cdnv2_110", 0.0), ("cdnv2_110", 1.0),
                                           ("densenet_bc_100", 0.0)])
def test_memory_efficient_matches_plain(name, progress):
    plain = _build(name, progress)
    eff = copy.deepcopy(plain)
    eff.set_memory_efficient(True)
    x, y = _batch()
    out_p, out_e = _step(plain, x, y), _step(eff, x, y)
    torch.testing.assert_close(out_e, out_p, rtol=1e-10, atol=1e-12)
    for (n, p), q in zip(plain.named_parameters(), eff.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=lambda m: f"{n}: {m}")
    # BN running statistics updated exactly once (not again by the recompute)
    for (n, b), c in zip(plain.state_dict().items(), eff.state_dict().values()):
        torch.testing.assert_close(c, b, rtol=0, atol=1e-13, msg=lambda m: f"{n}: {m}")
    assert all(int(m.num_batches_tracked) == 1 for m in eff.modules() if isinstance(m, nn.BatchNorm2d))


def test_memory_efficient_is_used_and_switchable():
    from graphs.layers import efficient
    m = _build("cdnv2_110", 1.0)
    calls = []
    orig = efficient.BNActConv.forward

    def counting(ctx, *a):
        calls.append(1)
        return orig(ctx, *a)
    efficient.BNActConv.forward = staticmethod(counting)
    try:
        x, y = _batch(2)
        m.set_memory_efficient(True)
        _step(m, x, y)
        n_layers = sum(m.stages)
        assert len(calls) == 3 * n_layers          # LGC, 3x3 Conv, SFR per layer
        calls.clear()
        with torch.no_grad():
            m(x)                                    # no grad: plain path
        m.set_memory_efficient(False)
        _step(m, x, y)
        assert not calls
    finally:
        efficient.BNActConv.forward = orig


@pytest.mark.parametrize("name,efficient", [("condensenet_50", False), ("condensenet_50", True),
                                            ("cdnv2_110", False), ("cdnv2_110", True)])
def test_condensed_form_training_equals_masked_dense(name, efficient):
    dense = _build(name, 1.0)
    lgcs = [m for m in dense.modules() if hasattr(m, "condensed_forward")]
    assert lgcs and all(m._condensed_ready for m in lgcs), "the switch to the condensed form is automatic"
    cond = copy.deepcopy(dense)
    for m in dense.modules():
        if hasattr(m, "condensed_forward"):
            m.condensed_forward = False
    for m in (dense, cond):
        m.set_memory_efficient(efficient)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4) for m in (dense, cond)]
    for step in range(3):
        x, y = _batch(seed=10 + step)
        for m, opt in zip((dense, cond), opts):
            opt.zero_grad(set_to_none=True)
            _step(m, x, y)
            opt.step()
    for (n, a), b in zip(dense.state_dict().items(), cond.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11, msg=lambda m: f"{n}: {m}")
    # the checkpoint keeps the official layout: dense conv weights and masks
    sd = cond.state_dict()
    lgc_key = next(k for k in sd if k.endswith("conv_1.conv.weight"))
    assert sd[lgc_key].shape[1] == dense.get_submodule(lgc_key[:-len(".conv.weight")]).in_channels
    assert any(k.endswith("conv_1._mask") for k in sd)


class _NoSync:
    """Make ``.item()``, ``bool(tensor)``, ``.tolist()`` and ``nonzero`` raise while active."""
    names = ("item", "__bool__", "tolist", "nonzero")

    def __enter__(self):
        self.saved = {n: getattr(torch.Tensor, n) for n in self.names}

        def boom(*a, **k):
            raise AssertionError("host sync in forward/backward")
        for n in self.names:
            setattr(torch.Tensor, n, boom)
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("name,progress,efficient", [("condensenet_50", 0.2, True), ("condensenet_50", 1.0, True),
                                                     ("cdnv2_110", 1.0, False), ("cdnv2_110", 0.0, True)])
def test_no_host_sync_in_training_step(name, progress, efficient):
    m = _build(name, progress, dtype=torch.float32)
    m.set_memory_efficient(efficient)
    x, y = _batch(2, dtype=torch.float32)
    with _NoSync():
        _step(m, x, y)
        m.set_progress(progress)            # no new event: host-side no-op


def _rel(a, b):
    return float((a - b).abs().max() / a.abs().max())


@pytest.mark.parametrize("name,kw,res", [("condensenet_50", {}, 32), ("condensenet_74_g8", dict(stages=(1, 1, 2, 1, 1)), 224),
                                         ("cdnv2_110", dict(stages=(2, 2, 2)), 32), ("cdnv2_a", {}, 224)])
def test_fused_converted_same_logits(name, kw, res):
    torch.manual_seed(0)
    m = condensed(create_model(name, **kw))
    conv = m.convert().eval()
    fused = copy.deepcopy(conv).fuse()
    assert fused.is_fused and not fused.training
    x = torch.randn(2, 3, res, res)
    with torch.inference_mode():
        ref = conv(x)
        assert _rel(ref, fused(x)) < 1e-5
        cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
        assert _rel(ref, cl(x.contiguous(memory_format=torch.channels_last))) < 1e-5
        # fuse() of a training-time model converts first and leaves the model alone
        assert _rel(ref, m.fuse()(x)) < 1e-5
    assert not m.is_converted


def test_fused_rexnet_same_logits():
    m = randomize_bn(create_model("rexnet_1_0")).eval()
    f = copy.deepcopy(m).fuse()
    assert not any(type(b) is nn.BatchNorm2d for b in f.modules())
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        assert _rel(m(x), f(x)) < 1e-5


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")),
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
@pytest.mark.parametrize("name", ["cdnv2_110", "rexnet_1_0"])
def test_compiled_fused_same_logits(name):
    """torch.compile with inductor freezing (what benchmarks/suite.py measures) keeps the fused logits."""
    import torch._inductor.config as inductor_config
    torch.manual_seed(0)
    if name == "rexnet_1_0":      # in-place partial shortcut (eager) vs cat (compiled) inside fuse()
        fused, x = randomize_bn(create_model(name)).eval().fuse(), torch.randn(1, 3, 64, 64)
    else:
        fused, x = condensed(create_model(name, stages=(1, 1, 1))).fuse(), torch.randn(2, 3, 32, 32)
    with torch.inference_mode(), inductor_config.patch(freezing=True):
        ref = fused(x)
        out = torch.compile(fused)(x)
    assert _rel(ref, out) < 1e-5


@pytest.mark.parametrize("script, rows", [("suite.py", ["cnet86_converted", "densenet100_train"]),
                                          ("loader.py", ["cifar_loader"])])
def test_benchmark_quick_writes_json(tmp_path, script, rows):
    """benchmarks/suite.py and benchmarks/loader.py --quick: the table and the JSON of benchmarks/README.md."""
    path = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick", "--json", str(path),
                        "--rows", ",".join(rows)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "| workload |" in p.stdout
    data = json.loads(path.read_text())
    assert [r["row"] for r in data["rows"]] == rows
    for r in data["rows"]:
        assert r["speed_ratio"] > 0
        for v in ("baseline", "optimized"):
            assert r[v]["ms"] > 0 and r[v]["peak_rss_mb"] > 0


def test_deploy_benchmark_quick_rows_beside_the_peer(tmp_path):
    """benchmarks/deploy_suite.py (the runtime table of benchmarks/README.md): every model x runtime, ratio to rexnet_100."""
    path = tmp_path / "deploy.json"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "deploy_suite.py"), "--quick",
                        "--in-process", "--models", "condensenet_86", "--variants", "eager,onnxruntime,openvino",
                        "--repeat", "1", "--artifacts", str(tmp_path / "art"), "--json", str(path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {r["model"]: r for r in json.loads(path.read_text())["deploy"]}
    assert list(rows) == ["timm_rexnet_100", "condensenet_86"] and rows["timm_rexnet_100"]["ratio"] == 1.0
    for r in rows.values():
        assert all(r["variants"][v]["ms"] > 0 for v in ("eager", "onnxruntime", "openvino"))
    assert rows["condensenet_86"]["ratio"] > 0 and "| CondenseNet-86 converted, 32x32 |" in p.stdout
