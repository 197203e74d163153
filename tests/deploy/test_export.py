"""ONNX and TorchScript export: parity with PyTorch on a dynamic batch, atomic writes, user errors."""
import os

import numpy as np
import pytest
import torch
from torch import nn

from deploy.export import export_onnx, export_torchscript
from graphs.models import create_model
from graphs.models.pretrained import PretrainedCfg
from utils.errors import ConfigError, ExportError, UserError

import onnx  # noqa: E402  (requirements.txt: a missing package must fail, not skip)
import onnxruntime as ort  # noqa: E402


def _build(name, **kwargs):
    return create_model(name, **kwargs)


@torch.no_grad()
def _randomize(model, seed=0):
    """Non-trivial BN statistics/affine so that a wrong graph cannot agree by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.6 - 0.3)
    return model


def _condensed(name, **kwargs):
    torch.manual_seed(0)
    model = _build(name, **kwargs)
    while model.set_progress(1.0):   # apply every condensation stage (one or all per call)
        pass
    return _randomize(model).convert()


# name -> (builder, input_size); tiny variants where the full one is slow on 2 CPU cores.
CASES = {
    "densenet_bc": (lambda: _randomize(_build("densenet_bc_100", stages=(2, 2, 2), growth=(4, 4, 4))), (3, 32, 32)),
    "condensenet_50_converted": (lambda: _condensed("condensenet_50"), (3, 32, 32)),
    # CIFAR CondenseNetV2 with short blocks: HS, SE, converted LGC (index_select + shuffle) and SFR
    # (index_add with duplicate destinations).
    "cdnv2_cifar_converted": (lambda: _condensed("cdnv2_110", stages=(2, 2, 2)), (3, 32, 32)),
    # cdnv2_a keeps the official fixed 7x7 final pooling, so it needs a 224 input (46M FLOPs).
    "cdnv2_a_converted": (lambda: _condensed("cdnv2_a"), (3, 224, 224)),
    "rexnet_1_0": (lambda: _randomize(_build("rexnet_1_0")), (3, 64, 64)),
}


# TorchScript tracing is op-agnostic: the CIFAR CondenseNetV2 already covers cdnv2_a's layers.
TORCHSCRIPT_CASES = sorted(set(CASES) - {"cdnv2_a_converted"})
_built = {}


def _case(name):
    if name not in _built:
        build, size = CASES[name]
        torch.manual_seed(0)
        _built[name] = (name, build().eval(), size)
    return _built[name]


def _ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


ONNX_CASES = [pytest.param(n, marks=pytest.mark.slow) if n == "cdnv2_a_converted" else n for n in sorted(CASES)]


@pytest.mark.parametrize("name", ONNX_CASES)
def test_onnx_parity_dynamic_batch(name, tmp_path):
    name, model, size = _case(name)
    path = tmp_path / f"{name}.onnx"
    info = export_onnx(model, path, input_size=size)
    assert info["path"] == str(path) and path.is_file()
    assert info["batch_sizes"] == [1, 3] and info["opset"] == 17
    assert info["max_abs_diff"] <= 1e-4
    assert not model.training
    # independent check on a batch size the exporter did not try
    x = torch.randn(4, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = model(x).numpy()
    out = _ort_run(path, x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    assert [n.name for n in os.scandir(tmp_path)] == [path.name]     # no temp file left behind


@pytest.mark.parametrize("name", TORCHSCRIPT_CASES)
def test_torchscript_parity(name, tmp_path):
    name, model, size = _case(name)
    path = tmp_path / f"{name}.pt"
    info = export_torchscript(model, path, input_size=size)
    assert info["max_abs_diff"] <= 1e-5 and info["method"] == "trace" and path.is_file()
    loaded = torch.jit.load(str(path))
    x = torch.randn(5, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), torch.jit.optimized_execution(False):
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)


class _IndexAddNet(nn.Module):
    """The converted-SFR pattern: y added into x at destinations that repeat."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 1)
        self.register_buffer("index", torch.tensor([0, 2, 2, 5, 0, 2]))

    def forward(self, x):
        return x.index_add(1, self.index, self.conv(x[:, :4]))


def test_index_add_with_duplicates_is_summed(tmp_path):
    # torch's builtin legacy symbolic keeps only one of the duplicated addends; ours must sum them.
    torch.manual_seed(0)
    model = _IndexAddNet()
    info = export_onnx(model, tmp_path / "ia.onnx", input_size=(8, 5, 5), exporter="legacy")
    assert info["exporter"] == "legacy" and info["max_abs_diff"] <= 1e-5
    # the override is scoped to the export: the builtin symbolic is back afterwards
    from torch.onnx._internal.torchscript_exporter import registration
    group = registration.registry.get_function_group("aten::index_add")
    assert group is not None and not group._functions.overridden(17)


def test_model_mode_restored_and_model_unchanged(tmp_path):
    model = _randomize(_build("densenet_bc_100", stages=(1, 1, 1), growth=(2, 2, 2)))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", check=False)
    export_torchscript(model, tmp_path / "m.pt", check=False)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_unwritable_or_missing_folder_is_a_user_error(tmp_path):
    model = _build("densenet_bc_100", stages=(1, 1, 1), growth=(2, 2, 2))
    with pytest.raises(ConfigError, match="does not exist"):
        export_onnx(model, tmp_path / "no" / "such" / "m.onnx")
    with pytest.raises(ConfigError, match="does not exist"):
        export_torchscript(model, tmp_path / "no" / "m.pt")
    with pytest.raises(ConfigError, match="folder"):
        export_onnx(model, tmp_path)
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="not writable"):
                export_onnx(model, ro / "m.onnx")
        finally:
            ro.chmod(0o700)
    with pytest.raises(ConfigError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(3, 32))
    with pytest.raises(ConfigError, match="exporter"):
        export_onnx(model, tmp_path / "m.onnx", exporter="tflite")


class _Broken(nn.Module):
    pretrained_cfg = PretrainedCfg(input_size=(3, 8, 8))

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        if x.shape[0] != 2:                    # traced with batch 2: any other batch is "wrong"
            raise RuntimeError("boom")
        return self.conv(x).mean((2, 3))


def test_failed_export_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError) as err:
        export_onnx(_Broken(), path, exporter="legacy")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.slow
def test_dynamo_exporter_matches(tmp_path):
    torch.manual_seed(0)
    info = export_onnx(_IndexAddNet(), tmp_path / "d.onnx", input_size=(8, 5, 5), exporter="dynamo")
    assert info["exporter"] == "dynamo" and info["max_abs_diff"] <= 1e-5
