"""CondenseNet (v1): registry, shapes, conversion equivalence for every variant, hooks."""
import numpy as np
import pytest
import torch

from graphs.models import create_model, list_models, load_weights
from graphs.models.condensenet import CondenseNet, CondensingLinear
from graphs.models.layouts import mismatch_hint
from _condense_helpers import condensed

V1 = ["condensenet_50", "condensenet_74", "condensenet_86", "condensenet_98", "condensenet_110",
      "condensenet_122", "condensenet_182", "condensenet_74_g4", "condensenet_74_g8"]


def test_registered():
    assert set(V1) <= set(list_models("condensenet_*"))


def _input(model, n=2, seed=1):
    torch.manual_seed(seed)
    return torch.randn(n, *model.pretrained_cfg.input_size)


@pytest.mark.parametrize("name", V1)
def test_conversion_equivalence(name):
    torch.manual_seed(0)
    model = condensed(create_model(name))
    x = _input(model)
    exact = model.convert(prune_classifier=False).eval()
    pruned = model.convert().eval()
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(exact(x), ref, atol=1e-5)
        feats = model.forward_features(x)
        assert torch.allclose(pruned.forward_features(x), feats, atol=1e-5)
        pooled = model.features.pool_last(feats).flatten(1)
        kept = pooled.index_select(1, pruned.classifier.index)
        assert torch.allclose(pruned(x), pruned.classifier.linear(kept), atol=1e-6)
    # the converted model's state dict fits the directly built converted model
    target = create_model(name, converted=True)
    load_weights(target, pruned.state_dict())
    with torch.no_grad():
        assert torch.allclose(target.eval()(x), pruned(x), atol=1e-6)
    assert pruned.is_converted and not model.is_converted
    assert pruned.pretrained_cfg == model.pretrained_cfg


def test_general_g_neq_c_conversion():
    torch.manual_seed(0)
    model = condensed(CondenseNet(stages=(2, 2, 2), growth=(8, 16, 32), group_1x1=2, group_3x3=4, condense_factor=4))
    conv = model.convert(prune_classifier=False).eval()
    lgc = conv.features.denseblock_1.denselayer_1.conv_1
    assert lgc.index.numel() == 16 * 2 // 4 and lgc.conv.weight.shape == (32, 4, 1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(conv(x), model(x), atol=1e-5)
    load_weights(CondenseNet(stages=(2, 2, 2), growth=(8, 16, 32), group_1x1=2, group_3x3=4, condense_factor=4,
                             converted=True, prune_classifier=False), conv.state_dict())


def test_init_and_attributes():
    torch.manual_seed(0)
    m = create_model("condensenet_86")
    assert m.flops_rule == "v1" and not m.is_converted
    assert m.pretrained_cfg.input_size == (3, 32, 32) and m.pretrained_cfg.mean is None
    w = m.features.denseblock_3.denselayer_1.conv_1.conv.weight
    assert abs(w.std().item() - (2.0 / w.shape[0]) ** 0.5) < 0.1 * (2.0 / w.shape[0]) ** 0.5
    assert float(m.classifier.bias.detach().abs().sum()) == 0.0
    assert all(float(b.weight.detach().min()) == 1.0 for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
    g8 = create_model("condensenet_74_g8")
    assert g8.features.init_conv.stride == (2, 2) and g8.pretrained_cfg.crop_pct == 0.875
    assert g8.num_classes == 1000
    conv = create_model("condensenet_74_g4", converted=True)
    assert isinstance(conv.classifier, CondensingLinear) and conv.classifier.index.numel() == 1032


@pytest.mark.parametrize("name,size", [("condensenet_50", 32), ("condensenet_74_g8", 224)])
def test_feature_info(name, size):
    m = create_model(name).eval()
    got = {}
    hooks = [m.get_submodule(i["module"]).register_forward_hook(
        lambda mod, inp, out, key=i["module"]: got.__setitem__(key, out.shape)) for i in m.feature_info]
    with torch.no_grad():
        feats = m.forward_features(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    for info in m.feature_info:
        shape = got[info["module"]]
        assert shape[1] == info["num_chs"] and shape[-1] == size // info["reduction"]
    assert feats.shape[1] == m.num_features == m.feature_info[-1]["num_chs"]
    if size == 224:
        assert [i["reduction"] for i in m.feature_info][-3:] == [8, 16, 32]


def test_set_progress_and_reuse_matrices():
    torch.manual_seed(0)
    m = create_model("condensenet_50")
    m.train()
    m.set_progress(0.2)                        # C = 4: the first event is at progress 1/6
    m(torch.randn(2, 3, 32, 32))
    assert {l.stage for l in m.condensing_modules()} == {1}
    r = m.reuse_matrices()
    assert set(r) == {"lgc"}
    mat = r["lgc"]
    assert mat.shape == (24, 25)
    for t in range(24):
        assert np.all(np.isfinite(mat[t, :t + 1])) and np.all(np.isnan(mat[t, t + 1:]))
        assert np.nanmax(mat[t]) == pytest.approx(1.0)


def test_mismatch_hints():
    m = create_model("condensenet_50")
    assert "num_classes=100" in mismatch_hint(m, [], [], [("classifier.weight", (100, 464), (10, 464))])
    hint = mismatch_hint(
        m, [], [], [("features.denseblock_1.denselayer_1.conv_2.conv.weight", (8, 16, 3, 3), (8, 8, 3, 3))])
    assert "group_3x3=2" in hint
