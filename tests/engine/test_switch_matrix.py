"""Every family trains under bf16 autocast, channels_last, both, and memory_efficient off (CPU); through
main.py also compiled (CPU) and in fp16 on CUDA (marked ``cuda``: skipped without a GPU).

A plain loop (forward under autocast, backward, SGD step, then an eval forward) for two steps; the
loss must stay finite, every parameter must get a finite fp32 gradient, and the eval logits must be
close to the fp32 NCHW model's (same weights), so a switch that silently breaks the numerics fails too.
"""
import copy
import shutil

import pytest
import torch
import torch.nn.functional as F

from graphs.models import create_model

# the CIFAR builders with one layer per block; ReXNet v1 / lite through their classes at half width
# and depth (the same blocks, SE, partial shortcuts and heads as rexnet_1_0 / rexnet_lite_1_0)
FAMILIES = {
    "densenet_bc_100": dict(stages=(1, 1, 1), growth=(4, 4, 4)),
    "condensenet_50": dict(stages=(1, 1, 1)),
    "cdnv2_110": dict(stages=(1, 1, 1)),
    "rexnet_v1": dict(width_mult=0.5, depth_mult=0.5, cifar_stem=True),
    "rexnet_lite": dict(multiplier=0.5, cifar_stem=True),
}
SWITCHES = {"bf16": (True, False, True), "channels_last": (False, True, True),
            "bf16+channels_last": (True, True, True), "memory_efficient_off": (False, False, False)}
FAST = "bf16+channels_last"     # CI's representative per family; the rest of the matrix is marked slow


def _model(name):
    from graphs.models.rexnet import ReXNetV1, ReXNetV1Lite
    torch.manual_seed(0)
    cls = {"rexnet_v1": ReXNetV1, "rexnet_lite": ReXNetV1Lite}.get(name)
    if cls is not None:
        return cls(num_classes=10, **FAMILIES[name])
    return create_model(name, num_classes=10, **FAMILIES[name])


@pytest.mark.parametrize("switch", [s if s == FAST else pytest.param(s, marks=pytest.mark.slow) for s in SWITCHES])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_trains_under_switch(name, switch):
    amp, channels_last, memory_efficient = SWITCHES[switch]
    model = _model(name)
    model.set_progress(1.0)                 # the condensed (gather + grouped conv) training form too
    reference = copy.deepcopy(model)
    model.set_memory_efficient(memory_efficient)
    g = torch.Generator().manual_seed(1)
    size = 16 if name.startswith("rexnet") else 32     # CondenseNets end in a fixed 8x8 pool
    x, y = torch.randn(4, 3, size, size, generator=g), torch.randint(0, 10, (4,), generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(2):
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            out = model(x)
            loss = F.cross_entropy(out.float(), y)
        assert out.dtype == (torch.bfloat16 if amp else torch.float32)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for n, p in model.named_parameters():
            assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), n
        opt.step()
        assert torch.isfinite(loss)
    # eval: same weights in a plain fp32 NCHW copy give nearly the same logits
    reference.load_state_dict(model.state_dict())
    model.eval()
    reference.eval()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
        got = model(x).float()
    with torch.no_grad():
        want = reference(x.contiguous())
    err = float((got - want).abs().max() / want.abs().max())
    assert err < (5e-2 if amp else 1e-4), err


# ---------------------------------------------------------------------------------------------------
# The same matrix through main.py: one short epoch, a resume for a second one, then validate
MAIN_MODELS = {
    "densenet_bc_100": dict(stages=[1, 1, 1], growth=[4, 4, 4]),
    "condensenet_50": dict(stages=[1, 1, 1]),
    "cdnv2_110": dict(stages=[1, 1, 1]),
    "rexnet_1_0": dict(depth_mult=0.5, cifar_stem=True),
    "rexnet_lite_1_0": dict(cifar_stem=True),
}
MAIN_SWITCHES = {"bf16": dict(amp="bf16"), "channels_last": dict(channels_last=True),
                 "bf16+channels_last": dict(amp="bf16", channels_last=True),
                 "memory_efficient_off": dict(memory_efficient=False)}
# changes to the tiny config: 2 steps an epoch on 32x32 images
SHORT = dict(synthetic_train_size=16, synthetic_val_size=8, synthetic_shape=[3, 32, 32], batch_size=8, lr=0.02)


@pytest.mark.parametrize("switch", [s if s == FAST else pytest.param(s, marks=pytest.mark.slow)
                                    for s in MAIN_SWITCHES])
@pytest.mark.parametrize("name", list(MAIN_MODELS))
def test_main_trains_resumes_and_validates_under_switch(tmp_path, tiny_config, name, switch):
    import main
    from engine.checkpoint import load_checkpoint
    path = tiny_config("m", model=name, model_args=MAIN_MODELS[name], **SHORT, **MAIN_SWITCHES[switch])
    assert main.main([path]) == 0
    assert main.main([path, "--set", "max_epoch=2"]) == 0                       # resumes epoch 2
    assert load_checkpoint(tmp_path / "exp" / "m" / "checkpoints" / "last.pth")["epoch"] == 2
    assert main.main([path, "--mode", "validate"]) == 0


# ---------------------------------------------------------------------------------------------------
# compile: true through main.py on the CPU, fp16 through main.py on CUDA: train, stop after epoch 1,
# resume, validate, against an uninterrupted eager run of the same config
def _resumed_and_uninterrupted(tmp_path, monkeypatch, reference: dict, run: dict):
    """(final weights of ``reference`` run straight through, of ``run`` stopped after epoch 1 and resumed);
    the resumed run is validated too."""
    import main
    from conftest import run_interrupted_after_epoch_1, write_config
    from engine.checkpoint import load_checkpoint
    assert main.main([write_config(tmp_path, "ref", **{**SHORT, "max_epoch": 2, "seed": 3, **reference})]) == 0
    path = write_config(tmp_path, "run", **{**SHORT, "max_epoch": 2, "seed": 3, **run})
    run_interrupted_after_epoch_1(tmp_path, path, tmp_path / "exp" / "run" / "checkpoints", monkeypatch)
    assert main.main([path, "--mode", "validate"]) == 0
    weights = [load_checkpoint(tmp_path / "exp" / name / "checkpoints" / "last.pth") for name in ("ref", "run")]
    assert [w["epoch"] for w in weights] == [2, 2]
    return [w["model"] for w in weights]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler")
def test_main_compiled_trains_resumes_and_validates(tmp_path, monkeypatch):
    """compile: true (the pruning events of epoch 1 change the masks and stages the graph reads; the
    resumed run compiles again) ends with the eager run's weights up to inductor's rounding."""
    from torch._dynamo.utils import counters
    cfg = dict(model="condensenet_50", model_args={"stages": [1, 1, 1]}, device="cpu")
    counters.clear()
    eager, compiled = _resumed_and_uninterrupted(tmp_path, monkeypatch, cfg, dict(cfg, compile=True))
    assert counters["stats"]["unique_graphs"] >= 2, dict(counters["stats"])    # compiled, and again on resume
    for k, v in eager.items():
        torch.testing.assert_close(compiled[k], v, rtol=1e-3, atol=1e-4, msg=lambda m: f"{k}: {m}")


@pytest.mark.cuda
@pytest.mark.parametrize("name, model_args", [("condensenet_50", {"stages": [1, 1, 1]}),
                                              ("rexnet_1_0", {"depth_mult": 0.5, "cifar_stem": True})])
def test_main_fp16_on_cuda_resumes_exactly(tmp_path, monkeypatch, name, model_args):
    """amp fp16 + channels_last on CUDA with deterministic: true: stopped after epoch 1 and resumed, the run
    ends with the same weights as an uninterrupted one (the fp16 loss scale, the EMA and the per-batch
    dropout seeds are in the checkpoint or derived from the position)."""
    cfg = dict(model=name, model_args=model_args, device="cuda", amp="fp16", channels_last=True,
               deterministic=True, ema=True, ema_decay=0.9)
    reference, resumed = _resumed_and_uninterrupted(tmp_path, monkeypatch, cfg, cfg)
    for k, v in reference.items():
        assert torch.equal(resumed[k], v), k
