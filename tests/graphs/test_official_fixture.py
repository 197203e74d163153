"""The official CondenseNet-50 fixture and the official CondenseNetV2-A state-dict layout."""
import re

import pytest
import torch

from graphs.models import create_model, load_weights
from graphs.models.condensenet import CondenseNet
from conftest import shared_path
from _condense_helpers import condensed

ATOL = 1e-5


def _load(fixture_dir, name):
    return torch.load(fixture_dir / name, map_location="cpu")


@pytest.fixture
def official(fixture_dir):
    return dict(x=_load(fixture_dir, "input.pth"), out_u=_load(fixture_dir, "output_unconverted.pth"),
                out_c=_load(fixture_dir, "output_converted.pth"),
                sd_u=_load(fixture_dir, "unconverted_state_dict.pth"),
                sd_c=_load(fixture_dir, "converted_state_dict.pth"))


@pytest.mark.parametrize("loader", ["load_weights", "load_state_dict"])
def test_unconverted_loads_and_matches(official, fixture_dir, loader):
    model = create_model("condensenet_50")
    if loader == "load_weights":
        load_weights(model, fixture_dir / "unconverted_state_dict.pth")
    else:
        model.load_state_dict(official["sd_u"], strict=True)
    model.eval()
    # the host-side stage mirror comes back with the buffers
    assert {m.stage for m in model.condensing_modules()} == {3}
    assert all(m._condensed_ready for m in model.condensing_modules())
    with torch.no_grad():
        out = model(official["x"])
    assert torch.allclose(out, official["out_u"], atol=ATOL)
    # the masked dense path gives the same logits as the grouped (condensed) forward
    for m in model.condensing_modules():
        m.condensed_forward = False
    with torch.no_grad():
        assert torch.allclose(model(official["x"]), official["out_u"], atol=ATOL)
    # resuming the schedule does nothing more: the masks are final
    assert model.set_progress(1.0) == 0


@pytest.mark.parametrize("loader", ["load_weights", "load_state_dict"])
def test_converted_loads_and_matches(official, fixture_dir, loader):
    model = create_model("condensenet_50", converted=True)
    assert model.is_converted
    if loader == "load_weights":
        load_weights(model, fixture_dir / "converted_state_dict.pth")
    else:
        model.load_state_dict(official["sd_c"], strict=True)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(official["x"]), official["out_c"], atol=ATOL)


def test_our_conversion_reproduces_official(official):
    model = create_model("condensenet_50")
    model.load_state_dict(official["sd_u"])
    model.eval()
    conv = model.convert()
    assert conv.is_converted and not model.is_converted and conv is not model
    conv.eval()
    with torch.no_grad():
        assert torch.allclose(conv(official["x"]), official["out_c"], atol=ATOL)
    # the converted state dict is the official one: same keys, shapes, dtypes, values
    ours = conv.state_dict()
    assert list(ours) == list(official["sd_c"])
    for k, v in official["sd_c"].items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape, k
        assert torch.allclose(ours[k].float(), v.float(), atol=1e-7), k
    # classifier index: the kept inputs in ascending-norm order
    norms = model.classifier.weight.abs().sum(0)
    idx = official["sd_c"]["classifier.index"]
    assert torch.all(norms[idx][1:] >= norms[idx][:-1])


def test_conversion_without_classifier_pruning(official):
    model = create_model("condensenet_50")
    model.load_state_dict(official["sd_u"])
    model.eval()
    conv = model.convert(prune_classifier=False).eval()
    assert isinstance(conv.classifier, torch.nn.Linear)
    with torch.no_grad():
        assert torch.allclose(conv(official["x"]), official["out_u"], atol=ATOL)
        f_u = model.forward_features(official["x"])
        f_c = conv.forward_features(official["x"])
        pruned = create_model("condensenet_50", converted=True)
        pruned.load_state_dict(official["sd_c"])
        f_p = pruned.eval().forward_features(official["x"])
    assert torch.allclose(f_u, f_c, atol=ATOL) and torch.allclose(f_u, f_p, atol=ATOL)


def test_wrong_model_hint(fixture_dir):
    from utils.errors import CheckpointError
    with pytest.raises(CheckpointError, match="converted=True"):
        load_weights(create_model("condensenet_50"), fixture_dir / "converted_state_dict.pth")
    with pytest.raises(CheckpointError, match="converted=False"):
        load_weights(create_model("condensenet_50", converted=True), fixture_dir / "unconverted_state_dict.pth")
    with pytest.raises(CheckpointError, match="stages=8-8-8"):
        load_weights(create_model("condensenet_74"), fixture_dir / "unconverted_state_dict.pth")
    with pytest.raises(CheckpointError, match="condense_factor=4"):
        load_weights(CondenseNet(stages=(8, 8, 8), group_1x1=8, group_3x3=4, condense_factor=8,
                                 converted=True), fixture_dir / "converted_state_dict.pth")


# ------------------------------------------------------------------------------------------------
# CondenseNetV2-A official layout
# ------------------------------------------------------------------------------------------------
_ROW = re.compile(r"^\| `([^`]+)` \| \(([^)]*)\) \| (\w+) \|$", re.M)


@pytest.fixture(scope="module")
def v2a_layout():
    text = shared_path("docs", "cdnv2_a_state_dict_layout.md").read_text()
    unconverted, converted = text.split("## Converted")

    def parse(t):
        return [(k, tuple(int(v) for v in s.split(",") if v.strip()), d) for k, s, d in _ROW.findall(t)]
    return parse(unconverted), parse(converted)


def _layout(sd):
    return [(k, tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in sd.items()]


@pytest.fixture(scope="module")
def v2a_condensed():
    torch.manual_seed(0)
    return condensed(create_model("cdnv2_a"), seed=3)


def test_cdnv2_a_unconverted_layout(v2a_layout, v2a_condensed):
    expected, _ = v2a_layout
    assert len(expected) == 520
    assert _layout(v2a_condensed.state_dict()) == expected


def _official_converted_state_dict(model):
    """An official-format converted state dict, built from the condensed model by the rules of
    reference sections 1.5 and 2.5 with plain loops (independent of the model's own converter)."""
    sd = {}
    own = model.state_dict()
    handled = set()
    for name, m in model.named_modules():
        kind = type(m).__name__
        if kind not in ("LearnedGroupConv", "SFR"):
            continue
        p = name + "."
        handled.update(k for k in own if k.startswith(p))
        w = m.conv.weight.detach()
        mask = m._mask.detach()[:, :, 0, 0]
        out_c, in_c, g, c = m.out_channels, m.in_channels, m.groups, m.condense_factor
        if kind == "LearnedGroupConv":
            n = in_c // c
            index = torch.zeros(in_c * g // c, dtype=torch.long)
            neww = torch.zeros(out_c, n, 1, 1)
            bn = {a: torch.zeros(in_c * g // c) for a in ("weight", "bias", "running_mean", "running_var")}
            pos = 0
            for i in range(g):
                found = 0
                for j in range(in_c):
                    if found == n:
                        break
                    if mask[i, j] == 1:
                        index[pos] = j
                        for a in bn:
                            bn[a][pos] = getattr(m.norm, a)[j]
                        for k in range(out_c // g):
                            neww[i * (out_c // g) + k, pos % n] = w[i + k * g, j]
                        pos += 1
                        found += 1
            sd[p + "index"] = index
            for a in bn:
                sd[p + "norm." + a] = bn[a]
            sd[p + "norm.num_batches_tracked"] = torch.tensor(0)
            sd[p + "conv.weight"] = neww
        else:
            n = out_c // c
            width = out_c * g // c
            matrix = torch.zeros(width, width)
            neww = torch.zeros(width, in_c // g, 1, 1)
            slots = [0] * g
            for i in range(out_c):
                for j in range(g):
                    if slots[j] < n and mask[i, j] == 1:
                        for t in range(in_c // g):
                            neww[slots[j] + j * n, t] = w[i, j + t * g]
                        matrix[slots[j] + j * n, i] = 1.0
                        slots[j] += 1
            sd[p + "index"] = matrix
            for k, v in m.norm.state_dict().items():
                sd[p + "norm." + k] = v.clone()
            sd[p + "conv.weight"] = neww
    for k, v in own.items():
        if k not in handled:
            sd[k] = v.clone()
    return sd


def test_cdnv2_a_official_converted_loads(v2a_layout, v2a_condensed):
    _, expected = v2a_layout
    model = v2a_condensed
    official = _official_converted_state_dict(model)
    assert sorted(_layout(official)) == sorted(expected)
    ours = model.convert().eval()
    target = create_model("cdnv2_a", converted=True).eval()
    load_weights(target, {"state_dict": {"module." + k: v for k, v in official.items()}})
    plain = create_model("cdnv2_a", converted=True).eval()
    plain.load_state_dict(official, strict=True)
    # apart from the SFR index representation, our state dict is the official layout
    ours_layout = [(k, s, "float32" if k.endswith("sfr.index") else d) for k, s, d in _layout(ours.state_dict())]
    ours_layout = [(k, (s[0], s[0]) if k.endswith("sfr.index") else s, d) for k, s, d in ours_layout]
    assert ours_layout == expected
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        for net in (ours, target, plain):
            assert torch.allclose(net(x), ref, atol=ATOL)
    for name, m in ours.named_modules():
        if type(m).__name__ == "CondensedSFR":
            assert torch.equal(m.index, target.get_submodule(name).index)
            assert torch.equal(m.index_matrix(), official[name + ".index"])
