"""Every family trains under bf16 autocast, channels_last, both, and memory_efficient off (CPU).

A plain loop (forward under autocast, backward, SGD step, then an eval forward) for two steps; the
loss must stay finite, every parameter must get a finite fp32 gradient, and the eval logits must be
close to the fp32 NCHW model's (same weights), so a switch that silently breaks the numerics fails too.
"""
import copy

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


@pytest.mark.parametrize("switch", [s if s == FAST else pytest.param(s, marks=pytest.mark.slow)
                                    for s in MAIN_SWITCHES])
@pytest.mark.parametrize("name", list(MAIN_MODELS))
def test_main_trains_resumes_and_validates_under_switch(tmp_path, name, switch):
    import json

    import main
    from utils.checkpoint import load_checkpoint
    cfg = {"exp_name": "m", "agent": "ClassificationAgent", "model": name, "model_args": MAIN_MODELS[name],
           "dataset": "synthetic", "num_classes": 4, "synthetic_train_size": 16, "synthetic_val_size": 8,
           "synthetic_shape": [3, 32, 32], "batch_size": 8, "max_epoch": 1, "lr": 0.02, "device": "cpu",
           "exp_root": str(tmp_path / "exp"), **MAIN_SWITCHES[switch]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    assert main.main([str(path)]) == 0
    assert main.main([str(path), "--set", "max_epoch=2"]) == 0                       # resumes epoch 2
    assert load_checkpoint(tmp_path / "exp" / "m" / "checkpoints" / "last.pth")["epoch"] == 2
    assert main.main([str(path), "--mode", "validate"]) == 0
