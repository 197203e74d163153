"""CondenseNetV2: registry, configs, conversion equivalence, SFR index formats, hooks."""
import copy

import numpy as np
import pytest
import torch

from graphs.layers import HS, SFR, CondensedSFR, SELayer
from graphs.models import create_model, list_models, load_weights
from graphs.models.layouts import mismatch_hint
from utils.errors import CheckpointError
from _condense_helpers import condensed

V2 = ["cdnv2_a", "cdnv2_b", "cdnv2_c", "cdnv2_110", "cdnv2_146"]


def test_registered_and_configs():
    assert set(V2) <= set(list_models("cdnv2_*"))
    a = create_model("cdnv2_a")
    assert a.flops_rule == "v2" and a.num_features == 800 and a.fc.out_features == 828
    assert a.pretrained_cfg.interpolation == "bicubic" and a.pretrained_cfg.crop_pct == 0.875
    assert create_model("cdnv2_c").pretrained_cfg.interpolation == "bilinear"
    assert create_model("cdnv2_b").num_features == 1176
    assert create_model("cdnv2_c").num_features == 2064
    # HS from block 3, SE from block 4 (ImageNet); SFR BN effective init gamma = 1
    assert isinstance(a.features.denseblock_3.denselayer_1.conv_1.activation, HS)
    assert isinstance(a.features.denseblock_2.denselayer_1.conv_1.activation, torch.nn.ReLU)
    assert not hasattr(a.features.denseblock_3.denselayer_1, "se")
    assert isinstance(a.features.denseblock_4.denselayer_1.se, SELayer)
    assert float(a.features.denseblock_1.denselayer_1.sfr.norm.weight.detach().min()) == 1.0
    c110 = create_model("cdnv2_110")
    assert c110.features.init_conv.stride == (1, 1) and c110.pretrained_cfg.input_size == (3, 32, 32)
    assert c110.num_features == 1024 and create_model("cdnv2_146").num_features == 1360


@pytest.mark.parametrize("name", V2)
def test_conversion_equivalence(name):
    torch.manual_seed(0)
    model = condensed(create_model(name))
    conv = model.convert().eval()
    x = torch.randn(2, *model.pretrained_cfg.input_size)
    with torch.no_grad():
        assert torch.allclose(conv(x), model(x), atol=1e-5)
    target = create_model(name, converted=True)
    load_weights(target, conv.state_dict())
    with torch.no_grad():
        assert torch.allclose(target.eval()(x), conv(x), atol=1e-6)


def test_sfr_converted_layer_and_official_matrix():
    torch.manual_seed(0)
    sfr = SFR(8, 24, groups=4, condense_factor=4)
    with torch.no_grad():
        sfr.norm.weight.uniform_(0.5, 1.5)
        sfr.norm.running_mean.normal_()
    sfr.set_progress(1.0)
    sfr.eval()
    c = CondensedSFR(8, 24, 4, 4).load_from_sfr(sfr).eval()
    new, old = torch.randn(2, 8, 5, 5), torch.randn(2, 24, 5, 5)
    with torch.no_grad():
        assert torch.allclose(c(new, old), sfr(new, old), atol=1e-6)
        assert torch.allclose(c(new), sfr(new), atol=1e-6)
    # official float C x C matrix: accepted by shape check and translated on load
    sd = c.state_dict()
    sd["index"] = c.index_matrix()
    assert sd["index"].shape == (24, 24) and c.accepts_state_shape("index", sd["index"])
    d = CondensedSFR(8, 24, 4, 4)
    d.load_state_dict(sd)
    assert torch.equal(d.index, c.index)
    bad = dict(sd, index=sd["index"] * 2)
    with pytest.raises(CheckpointError):
        CondensedSFR(8, 24, 4, 4).load_state_dict(bad)
    # the mask keeps C_in / C_t destination rows per input group and duplicates accumulate
    assert c.index.numel() == 24 and c.index.view(4, 6).diff(dim=1).min() > 0


def test_schedule_state_round_trip_and_reuse():
    torch.manual_seed(0)
    m = create_model("cdnv2_110")
    n_mod = len(m.condensing_modules())
    assert n_mod == 2 * 54
    assert m.set_progress(0.3) == n_mod          # one event each (C=4: 1/6)
    fresh = create_model("cdnv2_110")
    fresh.load_state_dict(copy.deepcopy(m.state_dict()))
    assert fresh.set_progress(0.3) == 0 and fresh.set_progress(1.0) == 2 * n_mod
    r = fresh.reuse_matrices()
    assert set(r) == {"lgc", "sfr"} and r["sfr"].shape == (54, 55)
    for mat in r.values():
        for t in (0, 20, 53):
            assert np.all(np.isnan(mat[t, t + 1:])) and np.all(np.isfinite(mat[t, :t + 1]))
            assert np.nanmax(mat[t]) == pytest.approx(1.0)


def test_feature_info_and_forward_features():
    m = create_model("cdnv2_a").eval()
    assert [i["reduction"] for i in m.feature_info][-3:] == [8, 16, 32]
    with torch.no_grad():
        f = m.forward_features(torch.zeros(1, 3, 224, 224))
    assert f.shape == (1, 800, 7, 7)


def test_mismatch_hint_group_trans():
    m = create_model("cdnv2_a", converted=True)
    hint = mismatch_hint(m, [], [], [("features.denseblock_1.denselayer_1.sfr.conv.weight", (16, 2, 1, 1),
                                    (16, 1, 1, 1))])
    assert "group_trans=4" in hint
