"""ReXNet v1 / ReXNet-lite: channel schedules, published sizes, peer identity with timm, weight layouts."""
import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import timm  # requirements.txt: a missing package must fail, not skip

from _condense_helpers import randomize_bn
from conftest import ROOT
from graphs.models import create_model, list_models, load_weights
from graphs.models.layouts import to_timm_state_dict
from graphs.models.rexnet import ReXNetV1, rexnet_channels, rexnet_lite_channels
from utils.errors import CheckpointError, ConfigError


def randomise_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so a wrongly mapped BN changes the logits."""
    return randomize_bn(model, seed).eval()


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model, size=224):
    """Conv + Linear multiply-accumulates for one image (no bias, activations, pools)."""
    total = [0]

    def hook(mod, inputs, out):
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total[0] += out[0].numel() * k
        else:
            total[0] += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0]


# ---------------------------------------------------------------------------------------------
# Channel schedule (reference §1.2: banker's rounding, no make-divisible)
# ---------------------------------------------------------------------------------------------
CHANNELS = {
    1.0: (32, [16, 27, 38, 50, 61, 72, 84, 95, 106, 117, 128, 140, 151, 162, 174, 185], 1280),
    1.3: (42, [21, 35, 50, 65, 79, 94, 109, 123, 138, 152, 167, 182, 196, 211, 226, 240], 1664),
    1.5: (48, [24, 41, 58, 75, 92, 108, 125, 142, 159, 176, 193, 210, 226, 243, 260, 277], 1920),
    2.0: (64, [32, 54, 77, 100, 122, 144, 167, 190, 212, 234, 257, 280, 302, 324, 347, 370], 2560),
    3.0: (96, [48, 82, 116, 149, 183, 217, 250, 284, 318, 352, 386, 419, 453, 487, 520, 554], 3840),
}


@pytest.mark.parametrize("width", sorted(CHANNELS))
def test_channel_schedule(width):
    stem, outs, pen = CHANNELS[width]
    s, ins, o, p = rexnet_channels(width)
    assert (s, o, p) == (stem, outs, pen)
    assert ins == [stem] + outs[:-1]
    model = ReXNetV1(width_mult=width, num_classes=10)
    got = [b.out_channels for b in model.blocks()]
    assert got == outs and model.features[0].out_channels == stem and model.features[-3].num_features == pen


def test_bankers_rounding_ties_and_narrow_width():
    # 38.5 -> 38 and 128.5 -> 128 at w=1.0 (half-up would give 39/129); w=0.9 keeps the 32 stem.
    outs = rexnet_channels(1.0)[2]
    assert 38 in outs and 128 in outs and 39 not in outs
    assert rexnet_channels(0.9)[0] == 32 and 56 in rexnet_channels(0.9)[2]
    assert all(c % 8 == 0 for c in rexnet_lite_channels(1.3)[2])


# ---------------------------------------------------------------------------------------------
# Published params / MACs (official README, printed precision)
# ---------------------------------------------------------------------------------------------
# Each row: name, README params, README MACs ("FLOPs"), rule used to print our recomputed params.
# 'round': round to the printed precision.  'trunc': truncate (3.0x: 34.71M is printed "34M").
# 'round2': round to one more digit first (lite 1.3x: 6.748M -> 6.75 -> "6.8M").
# MACs are always rounded to the printed precision (1.5x: 0.876G -> "0.88").
PUBLISHED = [
    ("rexnet_0_9", "4.1", "0.35", "round"),
    ("rexnet_1_0", "4.8", "0.40", "round"),
    ("rexnet_1_3", "7.6", "0.66", "round"),
    ("rexnet_1_5", "9.7", "0.88", "round"),
    ("rexnet_2_0", "16", "1.5", "round"),
    ("rexnet_3_0", "34", "3.4", "trunc"),
    ("rexnet_lite_1_0", "4.7", "0.41", "round"),
    ("rexnet_lite_1_3", "6.8", "0.65", "round2"),
    ("rexnet_lite_1_5", "8.3", "0.84", "round"),
    ("rexnet_lite_2_0", "13", "1.5", "round"),
]


def _printed(value, like, rule="round"):
    digits = len(like.partition(".")[2])
    if rule == "trunc":
        value = math.floor(value * 10 ** digits) / 10 ** digits
    elif rule == "round2":
        value = float(f"{value:.{digits + 1}f}")
    return f"{value:.{digits}f}"


@pytest.mark.parametrize("name,params,macs,rule", PUBLISHED)
def test_published_params_and_macs(name, params, macs, rule):
    model = create_model(name)
    p, m = n_params(model), count_macs(model)
    assert _printed(p / 1e6, params, rule) == params, p
    assert _printed(m / 1e9, macs) == macs, m
    assert model.flops_rule == "macs"
    try:  # the project's counter must agree with this independent count
        from graphs.flops import profile
    except ImportError:
        return
    assert profile(model, input_size=(3, 224, 224)) == (m, p)


# ---------------------------------------------------------------------------------------------
# Peer identity with timm (random init, randomised BN)
# ---------------------------------------------------------------------------------------------
TIMM = [("rexnet_100", "rexnet_1_0"), ("rexnet_130", "rexnet_1_3"), ("rexnet_150", "rexnet_1_5"),
        ("rexnet_200", "rexnet_2_0"), ("rexnet_300", "rexnet_3_0")]


@pytest.mark.parametrize("timm_name,name", TIMM)
def test_timm_identity_and_round_trip(timm_name, name):
    torch.manual_seed(0)
    peer = randomise_bn(timm.create_model(timm_name, pretrained=False))
    ours = load_weights(create_model(name), peer.state_dict()).eval()
    assert n_params(ours) == n_params(peer)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = peer(x)
        out = ours(x)
    assert out.shape == ref.shape == (2, 1000)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # back to timm: strict load and the same logits
    back = timm.create_model(timm_name, pretrained=False).eval()
    back.load_state_dict(to_timm_state_dict(ours.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(x), ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Paddle .pdparams import
# ---------------------------------------------------------------------------------------------
def write_pdparams(state, path):
    """A .pdparams exactly as paddle.save writes one: pickle (protocol 4) of name -> ndarray with
    Paddle BN names and no num_batches_tracked, plus the StructuredToParameterName@@ table."""
    names = {"running_mean": "_mean", "running_var": "_variance"}
    out, table = {}, {}
    for i, (k, v) in enumerate(state.items()):
        prefix, _, leaf = k.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        key = f"{prefix}.{names.get(leaf, leaf)}"
        out[key] = v.detach().cpu().numpy()
        table[key] = f"param_{i}.w_0"
    out["StructuredToParameterName@@"] = table
    with open(path, "wb") as f:
        pickle.dump(out, f, protocol=4)


@pytest.mark.parametrize("name", ["rexnet_1_0", "rexnet_lite_1_0"])
def test_paddle_import(name, tmp_path):
    torch.manual_seed(1)
    src = randomise_bn(create_model(name, num_classes=10))
    path = tmp_path / "w.pdparams"
    write_pdparams(src.state_dict(), path)
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert any(k.endswith("._variance") for k in raw) and isinstance(raw["features.0.weight"], np.ndarray)
    dst = load_weights(create_model(name, num_classes=10), str(path)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), atol=1e-5, rtol=1e-5)
    assert int(dst.features[1].num_batches_tracked) == 0


# ---------------------------------------------------------------------------------------------
# Mismatch messages
# ---------------------------------------------------------------------------------------------
def test_wrong_width_names_the_likely_width():
    sd = create_model("rexnet_1_3", num_classes=10).state_dict()
    with pytest.raises(CheckpointError, match=r"width 1\.3 \(rexnet_1_3"):
        load_weights(create_model("rexnet_1_0", num_classes=10), sd)
    # timm layout of another width: translated first, then the same hint
    peer = timm.create_model("rexnet_130", pretrained=False, num_classes=10)
    with pytest.raises(CheckpointError, match="rexnet_1_3"):
        load_weights(create_model("rexnet_1_0", num_classes=10), peer.state_dict())
    # only the classifier differs: the hint names the class count
    with pytest.raises(CheckpointError, match="num_classes=10"):
        load_weights(create_model("rexnet_1_3", num_classes=100), sd)
    # lite file into a v1 model
    with pytest.raises(CheckpointError, match="ReXNet-lite"):
        load_weights(create_model("rexnet_1_0", num_classes=10),
                     create_model("rexnet_lite_1_0", num_classes=10).state_dict())


def test_builder_arguments():
    with pytest.raises(ConfigError, match="converted"):
        create_model("rexnet_1_0", converted=True)
    with pytest.raises(ConfigError, match="dropout_ratio"):
        create_model("rexnet_1_0", dropout_ratio=1.5)
    with pytest.raises(ConfigError, match="kernel_conf"):
        create_model("rexnet_lite_1_0", kernel_conf="33")
    with pytest.raises(ConfigError):
        create_model("rexnet_1_0", classes=10)    # official spelling is num_classes here
    assert len(list_models("rexnet*")) == 10


# ---------------------------------------------------------------------------------------------
# Converter script
# ---------------------------------------------------------------------------------------------
def _run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "convert_weights.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_converter_timm_paddle_official(tmp_path):
    torch.manual_seed(2)
    peer = randomise_bn(timm.create_model("rexnet_100", pretrained=False))
    torch.save({"state_dict": peer.state_dict()}, tmp_path / "timm.pth")   # a training checkpoint
    r = _run_tool(tmp_path / "timm.pth", tmp_path / "official.pth", "--to", "official")
    assert r.returncode == 0, r.stderr
    assert "matched 413/413 tensors for rexnet_1_0" in r.stdout
    ours = load_weights(create_model("rexnet_1_0"), str(tmp_path / "official.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), peer(x), atol=1e-5, rtol=1e-5)

    # Paddle -> timm: the timm model loads the result strictly
    write_pdparams(ours.state_dict(), tmp_path / "w.pdparams")
    r = _run_tool(tmp_path / "w.pdparams", tmp_path / "timm2.pth", "--to", "timm")
    assert r.returncode == 0, r.stderr
    assert "paddle" in r.stdout
    back = timm.create_model("rexnet_100", pretrained=False).eval()
    back.load_state_dict(torch.load(tmp_path / "timm2.pth", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back(x), peer(x), atol=1e-5, rtol=1e-5)


def test_converter_mismatch_exits_2_without_traceback(tmp_path):
    torch.save(create_model("rexnet_1_3", num_classes=10).state_dict(), tmp_path / "w13.pth")
    r = _run_tool(tmp_path / "w13.pth", tmp_path / "out.pth", "--to", "timm", "--model", "rexnet_1_0")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "rexnet_1_3" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.pth").exists()


# ---------------------------------------------------------------------------------------------
# Shapes, CIFAR variant, features, autograd
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rexnet_1_0", "rexnet_lite_1_0"])
def test_batch_of_one_keeps_batch_dim(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    assert model.pretrained_cfg.input_size == (3, 224, 224) and model.pretrained_cfg.interpolation == "bicubic"
    assert model.pretrained_cfg.crop_pct == 0.875 and model.is_converted is False


@pytest.mark.parametrize("name", ["rexnet_1_0", "rexnet_lite_1_0"])
def test_cifar_variant(name):
    model = create_model(name, num_classes=10, cifar_stem=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.forward_features(x).shape[-2:] == (4, 4)
    cfg = model.pretrained_cfg
    assert (cfg.input_size, cfg.crop_pct, cfg.interpolation, cfg.mean, cfg.std) == ((3, 32, 32), 1.0, "bilinear",
                                                                                   None, None)
    # same parameter shapes as the ImageNet model: ImageNet weights load into the CIFAR variant
    load_weights(model, create_model(name, num_classes=10).state_dict())


def test_feature_info_and_forward_features():
    model = create_model("rexnet_1_0", num_classes=10).eval()
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    maps = {}
    for f in model.feature_info:
        model.get_submodule(f["module"]).register_forward_hook(
            lambda m, i, o, key=f["module"]: maps.__setitem__(key, o))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
    assert feats.shape == (1, 1280, 2, 2)
    for f in model.feature_info:
        assert maps[f["module"]].shape == (1, f["num_chs"], 64 // f["reduction"], 64 // f["reduction"])


def test_training_step_torchscript_and_onnx(tmp_path):
    model = create_model("rexnet_1_0", num_classes=5).train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()      # partial shortcut must not be an in-place op on autograd tensors
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        ref = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), ref)
    import onnxruntime as ort
    path = tmp_path / "rexnet.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      opset_version=17)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(y, ref.numpy(), atol=1e-4, rtol=1e-4)
