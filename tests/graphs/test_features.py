"""Multi-scale features: shapes follow feature_info (channels, input / reduction) for every family."""
import pytest
import torch

from graphs.models import create_model, list_models
from utils.errors import ConfigError
from graphs.models.features import FeatureExtractor, feature_shapes


def _build(name, **kwargs):
    torch.manual_seed(0)
    return create_model(name, **kwargs).eval()


def _converted(name, **kwargs):
    model = _build(name, **kwargs)
    while model.set_progress(1.0):   # apply every condensation stage (one or all per call)
        pass
    return model.convert().eval()


# name -> (builder, input (C, H, W))
CASES = {
    "densenet_bc_100": (lambda: _build("densenet_bc_100", stages=(2, 2, 2), growth=(4, 4, 4)), (3, 32, 32)),
    "condensenet_50": (lambda: _build("condensenet_50"), (3, 32, 32)),
    "condensenet_50_converted": (lambda: _converted("condensenet_50"), (3, 32, 32)),
    "cdnv2_cifar": (lambda: _build("cdnv2_110", stages=(2, 2, 2)), (3, 32, 32)),
    "cdnv2_a": (lambda: _build("cdnv2_a"), (3, 224, 224)),
    "rexnet_1_0": (lambda: _build("rexnet_1_0"), (3, 64, 64)),
    "rexnet_1_0_cifar": (lambda: _build("rexnet_1_0", cifar_stem=True, num_classes=10), (3, 32, 32)),
}


def test_every_registered_model_publishes_feature_info():
    """Every variant (names from the registry) can serve as a multi-scale backbone."""
    from graphs.models import FAMILIES
    names = list_models()
    for family, pattern in FAMILIES.items():
        assert list_models(pattern), f"family {family} ({pattern}) is missing from the registry"
    for name in names:
        model = create_model(name)
        _check_info(model)


def _check_info(model):
    info = model.feature_info
    assert isinstance(info, list) and info
    reds = [e["reduction"] for e in info]
    assert reds == sorted(reds)
    modules = dict(model.named_modules())
    for e in info:
        assert set(e) >= {"num_chs", "reduction", "module"}
        assert isinstance(e["num_chs"], int) and isinstance(e["reduction"], int)
        assert e["module"] in modules, e["module"]
    return info


@pytest.mark.parametrize("name", sorted(CASES))
def test_feature_maps_match_feature_info(name):
    build, (c, h, w) = CASES[name]
    model = build()
    info = _check_info(model)
    fx = FeatureExtractor(model, reductions=None)          # every published stride
    assert fx.reductions == sorted({e["reduction"] for e in info})
    x = torch.randn(2, c, h, w)
    with torch.no_grad():
        feats = fx(x)
        final = model.forward_features(x)
    assert len(feats) == len(fx.reductions) == len(fx.channels)
    by_red = {e["reduction"]: e for e in info}
    for f, r, ch in zip(feats, fx.reductions, fx.channels):
        assert ch == by_red[r]["num_chs"]
        assert tuple(f.shape) == (2, ch, h // r, w // r), (name, r)
    # forward_features is the last map before pooling, at the deepest stride
    assert final.dim() == 4 and final.shape[0] == 2
    assert final.shape[2:] == feats[-1].shape[2:]
    if info[-1]["module"].endswith("relu_last"):
        torch.testing.assert_close(final, feats[-1])
    fx.remove()
    assert all(not m._forward_hooks for m in model.modules())


def test_default_fpn_strides_imagenet():
    model = _build("rexnet_1_0")
    with FeatureExtractor(model) as fx:                     # (8, 16, 32)
        assert fx.reductions == [8, 16, 32]
        with torch.no_grad():
            feats = fx(torch.randn(1, 3, 96, 96))
        assert [tuple(f.shape[1:]) for f in feats] == [(ch, 96 // r, 96 // r) for ch, r in
                                                       zip(fx.channels, (8, 16, 32))]
    assert all(not m._forward_hooks for m in model.modules())
    assert feature_shapes(model, (3, 64, 64), (32,)) == [(fx.channels[-1], 2, 2)]


def test_missing_reduction_is_config_error():
    model = _build("densenet_bc_100", stages=(2, 2, 2), growth=(4, 4, 4))   # CIFAR: strides 1, 2, 4
    with pytest.raises(ConfigError, match="reduction 8") as err:
        FeatureExtractor(model)
    assert "[1, 2, 4]" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="feature_info"):
        FeatureExtractor(torch.nn.Linear(2, 2))
    assert all(not m._forward_hooks for m in model.modules())


def test_features_are_differentiable():
    model = _build("densenet_bc_100", stages=(1, 1, 1), growth=(2, 2, 2)).train()
    fx = FeatureExtractor(model, reductions=(1, 4))
    feats = fx(torch.randn(2, 3, 32, 32))
    sum(f.mean() for f in feats).backward()
    assert model.features.init_conv.weight.grad is not None
