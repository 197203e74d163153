"""Learned group conv / SFR condensation: schedule, masks, state round trip, condensed forward, lasso."""
import copy

import pytest
import torch

from graphs.layers import SFR, CondensedLGC, LearnedGroupConv, stage_for_progress
from graphs.losses.group_lasso import group_lasso
from graphs.models import create_model
from utils.errors import ConfigError
from _condense_helpers import condensed, randomize_bn


def _lgc(in_c=32, out_c=16, g=4, c=None, seed=0):
    torch.manual_seed(seed)
    return LearnedGroupConv(in_c, out_c, 1, groups=g, condense_factor=c)


def _check_lgc_mask(m):
    mask = m._mask[:, :, 0, 0]
    kept = m.in_channels - m.count
    for g in range(m.groups):
        rows = mask[g::m.groups]
        assert torch.equal(rows, rows[:1].expand_as(rows)), "rows of one group differ"
        assert int(rows[0].sum()) == kept
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


def _check_sfr_mask(m):
    mask = m._mask[:, :, 0, 0]
    kept = m.out_channels - m.count
    for g in range(m.groups):
        cols = mask[:, g::m.groups]
        assert torch.equal(cols, cols[:, :1].expand_as(cols)), "columns of one group differ"
        assert int(cols[:, 0].sum()) == kept


@pytest.mark.parametrize("c", [4, 8])
def test_schedule_events(c):
    events = [j / (2 * (c - 1)) for j in range(1, c)]
    assert stage_for_progress(0.0, c) == 0
    for j, p in enumerate(events, start=1):
        assert stage_for_progress(p - 1e-9, c) == j - 1
        assert stage_for_progress(p, c) == j
    assert stage_for_progress(1.0, c) == c - 1


@pytest.mark.parametrize("c", [4, 8])
def test_lgc_events_and_density(c):
    m = _lgc(in_c=64, out_c=32, g=c, c=c)
    _check_lgc_mask(m)
    for j in range(1, c):
        p = j / (2 * (c - 1))
        assert m.set_progress(p - 1e-6) == 0
        assert m.set_progress(p) == 1
        assert m.stage == j and m.count == j * (64 // c)
        assert float(m._stage) == j and float(m._count) == j * (64 // c)
        _check_lgc_mask(m)
    assert float(m._mask.mean()) == pytest.approx(1 / c)
    assert m.set_progress(1.0) == 0


def test_lgc_criterion_prunes_smallest_group_l1():
    m = _lgc(in_c=8, out_c=4, g=2, c=4)
    with torch.no_grad():
        w = torch.arange(1, 33, dtype=torch.float32).view(4, 8)
        w[0, 5] = w[2, 5] = 0.0      # group 0 (rows 0, 2): input 5 has the smallest L1
        w[1, 3] = w[3, 3] = 0.0      # group 1 (rows 1, 3): input 3 smallest, then 0, 1, 2 ...
        m.conv.weight.copy_(w.view(4, 8, 1, 1))
    m.advance(1)
    mask = m._mask[:, :, 0, 0]
    assert mask[0].tolist() == [0, 1, 1, 1, 1, 0, 1, 1]   # delta = 2: input 5, then input 0
    assert mask[1].tolist() == [0, 1, 1, 0, 1, 1, 1, 1]


def test_jump_applies_all_events_and_matches_stepwise():
    a = _lgc(in_c=48, out_c=16, g=4, c=4)
    b = copy.deepcopy(a)
    assert a.set_progress(0.9) == 3
    for p in (0.2, 0.4, 0.6):
        b.set_progress(p)
    assert a.stage == b.stage == 3 and a.count == 36
    assert torch.equal(a._mask, b._mask)
    _check_lgc_mask(a)


def test_state_dict_round_trip_continues_schedule():
    torch.manual_seed(0)
    model = create_model("condensenet_50")
    assert model.set_progress(0.2) == 24          # one event in each of the 24 LGCs
    state = copy.deepcopy(model.state_dict())
    fresh = create_model("condensenet_50")
    fresh.load_state_dict(state)
    assert {m.stage for m in fresh.condensing_modules()} == {1}
    assert fresh.set_progress(0.2) == 0
    assert fresh.set_progress(0.6) == 48          # two more per layer
    model.set_progress(0.6)
    for a, b in zip(model.condensing_modules(), fresh.condensing_modules()):
        assert torch.equal(a._mask, b._mask) and a.count == b.count


@pytest.mark.parametrize("c", [4, 8])
def test_sfr_events_and_density(c):
    torch.manual_seed(0)
    m = SFR(16, 64, groups=c, condense_factor=c)
    for j in range(1, c):
        assert m.set_progress(j / (2 * (c - 1)) - 1e-6) == 0
        assert m.set_progress(j / (2 * (c - 1))) == 1
        assert m.count == j * (64 // c)
        _check_sfr_mask(m)
    assert float(m._mask.mean()) == pytest.approx(1 / c)


def test_lasso_terms_by_hand():
    """One group holds a 3-4-5 triangle (norm 5), the other 63 are zero (each clamped to sqrt(1e-6))."""
    m = _lgc(in_c=16, out_c=8, g=4, c=4)
    with torch.no_grad():
        m.conv.weight.zero_()
        m.conv.weight[1, 3] = 3.0       # output rows 1 and 5 are one group (rows g, g + G, ... as officially)
        m.conv.weight[5, 3] = 4.0
    assert float(m.lasso_term().detach()) == pytest.approx(5 + 63e-3)
    m.advance(3)
    assert float(m.lasso_term()) == 0.0
    s = SFR(8, 16, groups=4, condense_factor=4)
    with torch.no_grad():
        s.conv.weight.zero_()
        s.conv.weight[2, 1] = 3.0       # input columns 1 and 5 are one group
        s.conv.weight[2, 5] = 4.0
    assert float(s.lasso_term().detach()) == pytest.approx(5 + 63e-3)
    model = create_model("condensenet_50")
    total = group_lasso(model)
    assert total.dim() == 0 and float(total.detach()) > 0
    total.backward()
    assert model.features.denseblock_1.denselayer_1.conv_1.conv.weight.grad is not None
    model.set_progress(1.0)
    assert float(group_lasso(model)) == 0.0
    assert float(group_lasso(torch.nn.Linear(2, 2))) == 0.0


def test_condensed_forward_matches_masked_dense_layer():
    m = _lgc(in_c=24, out_c=16, g=4, c=4)
    randomize_bn(m)
    m.set_progress(1.0)
    assert m._condensed_ready
    x = torch.randn(3, 24, 5, 5)
    dense = copy.deepcopy(m)
    dense.condensed_forward = False
    m.train(), dense.train()
    y1, y2 = m(x), dense(x)
    assert torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    assert torch.allclose(m.conv.weight.grad, dense.conv.weight.grad, atol=1e-5)
    assert torch.allclose(m.norm.weight.grad, dense.norm.weight.grad, atol=1e-5)
    # and the converted layer computes the same thing
    conv = CondensedLGC(24, 16, 4, 4).load_from_lgc(m)
    m.eval(), conv.eval()
    with torch.no_grad():
        assert torch.allclose(conv(x), m(x), atol=1e-5)


@pytest.mark.parametrize("name", ["condensenet_50", "cdnv2_110"])
def test_condensed_forward_matches_masked_dense_model(name):
    torch.manual_seed(0)
    # float64: train-mode BN through ~50 layers amplifies float32 re-association noise to ~1e-3
    model = condensed(create_model(name)).train().double()
    dense = copy.deepcopy(model)
    for m in dense.condensing_modules():
        m.condensed_forward = False
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y1, y2 = model(x), dense(x)
    assert torch.allclose(y1, y2, atol=1e-10)
    y1.square().sum().backward()
    y2.square().sum().backward()
    for (n, p), (_, q) in zip(model.named_parameters(), dense.named_parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        assert (p.grad - q.grad).abs().max() <= 1e-8 * scale, n


def test_flops_counters_charge_the_final_condensed_cost():
    from graphs.flops import profile
    m = _lgc(in_c=32, out_c=16, g=4, c=4)     # hand count: ReLU over the input + MACs / C; BN + weight / C
    assert profile(m, (32, 8, 8), "v1") == (32 * 64 + 32 * 16 * 64 / 4, 64 + 32 * 16 / 4)
    s = SFR(8, 32, groups=4, condense_factor=4)
    assert profile(s, (8, 4, 4), "v2") == (8 * 16 + 8 * 32 * 16 / 4, 16 + 8 * 32 / 4)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="not divisible by condense_factor 8"):
        LearnedGroupConv(20, 32, 1, groups=4, condense_factor=8)
    with pytest.raises(ConfigError, match="same length"):
        create_model("condensenet_50", stages=(8, 8), growth=(8, 16, 32))
    with pytest.raises(ConfigError, match="divisible"):
        create_model("condensenet_50", growth=(10, 16, 32), group_3x3=2)
    with pytest.raises(ConfigError, match="data"):
        create_model("condensenet_50", data="mnist")
    with pytest.raises(ConfigError, match="trans_factor"):
        create_model("cdnv2_110", trans_factor=32)
    with pytest.raises(ConfigError):
        create_model("cdnv2_a", stages=(1, 1, 4), growth=(8, 8))
    with pytest.raises(ConfigError, match="condensation stage"):
        create_model("condensenet_50").convert()
