"""Runtime-friendly graphs (graphs/layers/runtime.py) and the deployment runtimes (deploy/openvino.py,
deploy/quantize.py, deploy/runtime.py).

Each graph form is checked against the converted model, which is checked against the condensed
training-time model; each runtime (onnxruntime, OpenVINO fp32) against PyTorch at 1e-4; int8 (NNCF)
against fp32 accuracy on the real CIFAR-10 test split.
"""
import warnings

import pytest
import torch

from deploy.export import export_onnx
from deploy.openvino import export_openvino, export_openvino_int8
from deploy.quantize import export_onnx_int8
from deploy.runtime import check_artifact, load_runtime
from graphs.layers.runtime import LGC_FORMS, SFR_FORMS, index_add_rounds, runtime_graph
from graphs.models import create_model
from utils.errors import ConfigError

# OpenVINO's and NNCF's native libraries, once used, have crashed a later in-process training run of the
# whole suite's interpreter: these tests run in a child pytest (tests/conftest.py)
pytestmark = pytest.mark.own_process

SMALL = [("condensenet_50", {}, 32), ("cdnv2_110", dict(stages=(2, 2, 2)), 32)]


def _randomise_bn(model, seed=0):
    """Non-trivial BN statistics / affine parameters, so folding errors show in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
        last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
        last.weight.mul_(10.0)                 # logits of order 1..10
    return model


def _condensed(name, kw, seed=0):
    torch.manual_seed(seed)
    model = create_model(name, **kw)
    model.set_progress(1.0)
    return _randomise_bn(model, seed).eval()


def _rel(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("name,kw,res", SMALL)
def test_runtime_graph_forms_match_converted_and_condensed(name, kw, res):
    model = _condensed(name, kw)
    conv = model.convert().eval()
    keys = list(conv.state_dict())
    x = torch.randn(3, 3, res, res, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        condensed, ref = model(x), conv(x)
        assert ref.abs().max() > 0.3          # large enough logits to compare
        # converted == condensed (v1's default conversion also prunes the classifier: compare unpruned)
        assert _rel(model.convert(prune_classifier=False).eval()(x), condensed) < 1e-5
        for lgc in LGC_FORMS:
            for sfr in SFR_FORMS:
                fast = runtime_graph(conv, lgc, sfr)
                assert _rel(fast(x), ref) < 1e-5, (lgc, sfr)
    assert list(conv.state_dict()) == keys    # the converted model (official layout) is untouched
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.features.denseblock_1.modules()
                   if name.startswith("condensenet"))   # v1: every block BN folded or turned into scale/shift


def test_runtime_graph_refuses_unconverted_and_bad_form():
    model = _condensed(*SMALL[0][:2])
    with pytest.raises(ConfigError, match="converted"):
        runtime_graph(model)
    with pytest.raises(ConfigError, match="lgc must be one of"):
        runtime_graph(model.convert(), lgc="sparse")


def test_dense_lgc_refuses_unequal_duplicate_bn():
    conv = _condensed(*SMALL[0][:2]).convert()
    lgc = conv.features.denseblock_1.denselayer_1.conv_1
    idx = lgc.index.tolist()
    dup = next(i for i, v in enumerate(idx) if idx.index(v) != i)      # a duplicated gather position
    with torch.no_grad():
        lgc.norm.weight[dup] += 1.0
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = conv.eval()(x)
        for form in ("gather", "auto"):      # BN after the gather there; auto falls back to gather
            graph = runtime_graph(conv, form)
            assert _rel(graph(x), ref) < 1e-5, form
    layer = runtime_graph(conv, "auto").features.denseblock_1[0]
    assert (layer.lgc_form, layer.bn_first) == ("gather", False)
    with pytest.raises(ConfigError, match="different BN parameters"):
        runtime_graph(conv, "dense")


def test_auto_lgc_mixes_dense_and_gather_layers_by_width(monkeypatch):
    """The default form picks per layer; a mixed chain stays exact (threshold moved between the widths
    of the small model's blocks, so both forms occur)."""
    import graphs.layers.runtime as runtime
    name, kw, res = SMALL[1]
    conv = _condensed(name, kw).convert().eval()
    widths = sorted({m.conv_1.out_channels for m in conv.modules() if hasattr(m, "conv_1")})
    monkeypatch.setattr(runtime, "AUTO_DENSE_MAX_OUT", widths[0])
    graph = runtime_graph(conv)
    forms = {(layer.conv_1.out_channels, layer.lgc_form) for layer in graph.modules()
             if isinstance(layer, runtime._RuntimeLayer)}
    assert {f for _, f in forms} == {"dense", "gather"} and all(
        (f == "dense") == (w <= widths[0]) for w, f in forms)
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert _rel(graph(x), conv(x)) < 1e-5


def test_index_add_rounds_sums_duplicates():
    x = torch.zeros(1, 3, 1, 1)
    y = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 4, 1, 1)
    out = index_add_rounds(x, torch.tensor([2, 0, 2, 2]), y)
    assert out.flatten().tolist() == [2.0, 0.0, 13.0]      # hand-computed: channel 2 gets 1 + 4 + 8


def _ort(path, x):
    import onnxruntime as ort
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("opset", [None, 13])
def test_plain_legacy_onnx_export_of_converted_v2_is_exact(tmp_path, opset):
    """A user's own ``torch.onnx.export(..., dynamo=False)`` of a converted CondenseNetV2 (duplicated SFR
    destinations) reproduces PyTorch; the naive index_add export would not (checked too)."""
    conv = _condensed(*SMALL[1][:2]).convert().eval()
    sfrs = [m for m in conv.modules() if type(m).__name__ == "CondensedSFR"]
    assert any(m.index.unique().numel() < m.index.numel() for m in sfrs)   # duplicates present
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {} if opset is None else dict(opset_version=opset)
    with torch.no_grad():
        ref = conv(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(conv, (x,), str(tmp_path / "m.onnx"), dynamo=False, **kw)
    assert _rel(_ort(tmp_path / "m.onnx", x), ref) < 1e-4

    class Naive(torch.nn.Module):        # the trap: index_add with duplicates through the legacy exporter
        def forward(self, a, b):
            return a.index_add(1, torch.tensor([0, 0]), b)
    a, b = torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Naive(), (a, b), str(tmp_path / "n.onnx"), dynamo=False, **kw)
    import onnxruntime as ort
    s = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    naive = s.run(None, {i.name: v.numpy() for i, v in zip(s.get_inputs(), (a, b))})[0]
    assert naive.flatten()[0] != 2.0      # if the exporter ever sums duplicates, index_add_rounds can go


def _small_models():
    out = []
    for name, kw, res in SMALL:
        conv = _condensed(name, kw).convert().eval()
        out.append((f"{name}-runtime", runtime_graph(conv), res))
    torch.manual_seed(0)
    rex = _randomise_bn(create_model("rexnet_1_0", num_classes=10, depth_mult=0.5)).eval()
    out.append(("rexnet_1_0", rex, 32))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(label, model, res, onnx path, IR path) of the small models, exported once."""
    d = tmp_path_factory.mktemp("rt")
    rows = []
    for label, model, res in _small_models():
        onnx_path = d / f"{label}.onnx"
        r = export_onnx(model, str(onnx_path), (3, res, res))
        assert r["max_abs_diff"] is not None
        ir = export_openvino(model, str(d / f"{label}.xml"), (3, res, res), onnx_path=str(onnx_path))
        assert ir["max_abs_diff"] <= 1e-4 * 10
        rows.append((label, model, res, onnx_path, d / f"{label}.xml"))
    return rows


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino"])
def test_runtimes_reproduce_pytorch(exported, kind):
    for label, model, res, onnx_path, ir in exported:
        x = torch.randn(4, 3, res, res, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            ref = model(x)
        paths = [onnx_path] + ([ir] if kind == "openvino" else [])
        for path in paths:
            rt = load_runtime(str(path), kind, threads=1)
            assert rt.input_size == (3, res, res) and rt.num_classes == ref.shape[1]
            assert _rel(rt(x), ref) < 1e-4, (label, kind, path.suffix)
            assert _rel(rt(x.numpy()), ref) < 1e-4


def test_ir_is_written_atomically(exported, tmp_path):
    label, model, res, onnx_path, _ = exported[0]
    out = tmp_path / "m.xml"
    export_openvino(model, str(out), (3, res, res), onnx_path=str(onnx_path), check=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]   # no temporary left behind


def test_runtime_bad_inputs(exported, tmp_path, monkeypatch):
    label, model, res, onnx_path, ir = exported[0]
    rt = load_runtime(str(ir))
    assert rt.kind == "openvino"
    with pytest.raises(ConfigError, match="exported for inputs"):
        check_artifact(rt, (3, res * 2, res * 2), 10)
    with pytest.raises(ConfigError, match="classes"):
        check_artifact(rt, (3, res, res), 100)
    with pytest.raises(ConfigError, match="takes inputs of size"):
        rt(torch.zeros(1, 3, res + 1, res + 1))
    with pytest.raises(ConfigError, match="does not exist"):
        load_runtime(str(tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="runtime 'openvino'"):
        load_runtime(str(ir), "onnxruntime")
    with pytest.raises(ConfigError, match="calibration data"):
        export_openvino_int8(model, str(tmp_path / "q.xml"), None, (3, res, res), onnx_path=str(onnx_path))
    with pytest.raises(ConfigError, match="calibration set is empty"):
        export_onnx_int8(str(onnx_path), str(tmp_path / "q.onnx"), [])
    import builtins
    real_import = builtins.__import__

    def no_openvino(name, *a, **k):
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ConfigError, match=r"pip install openvino"):
        load_runtime(str(ir))
    assert not (tmp_path / "q.xml").exists() and not (tmp_path / "q.onnx").exists()


# ------------------------------------------------------------------------------------ int8 on real data
def _cifar_arrays(root, n_train, n_test):
    from datasets.cifar import MEAN, STD, load_cifar
    tx, ty, vx, vy, _ = load_cifar("cifar10", root)
    mean = torch.tensor(MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(STD["cifar10"]).view(1, 3, 1, 1)

    def norm(x):
        return (x.float() / 255.0 - mean) / std
    return norm(tx[:n_train]), ty[:n_train], norm(vx[:n_test]), vy[:n_test]


def _top1(fn, x, y, batch=500):
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((fn(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * correct / len(x)


@pytest.mark.slow
def test_openvino_int8_within_one_point_of_fp32_on_cifar10(cifar10_root, tmp_path):
    """A narrow CondenseNet (stages 2-2-2) trained briefly on real CIFAR-10, converted, quantized by NNCF
    on 512 training images: int8 top-1 on 2000 test images is within 1 point of the fp32 IR's."""
    torch.manual_seed(0)
    tx, ty, vx, vy = _cifar_arrays(cifar10_root, 10000, 2000)
    model = create_model("condensenet_50", stages=(2, 2, 2))
    model.set_progress(1.0)                    # train the final (condensed) masks directly: short run
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.train()
    for epoch in range(2):
        perm = torch.randperm(len(tx))
        for i in range(0, len(tx), 100):
            idx = perm[i:i + 100]
            xb = tx[idx]
            flip = torch.rand(len(idx)) < 0.5
            xb[flip] = xb[flip].flip(3)
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(xb), ty[idx]).backward()
            opt.step()
    conv = runtime_graph(model.eval().convert().eval())
    onnx_path = str(tmp_path / "m.onnx")
    export_onnx(conv, onnx_path, (3, 32, 32))
    export_openvino(conv, str(tmp_path / "fp32.xml"), (3, 32, 32), onnx_path=onnx_path)
    calib = [tx[i:i + 32] for i in range(0, 512, 32)]
    q = export_openvino_int8(conv, str(tmp_path / "int8.xml"), calib, (3, 32, 32), onnx_path=onnx_path)
    assert q["calibration_images"] == 512
    fp32 = _top1(load_runtime(str(tmp_path / "fp32.xml"), threads=2), vx, vy)
    int8 = _top1(load_runtime(str(tmp_path / "int8.xml"), threads=2), vx, vy)
    with torch.no_grad():
        torch_top1 = _top1(conv, vx, vy)
    print(f"CIFAR-10 test top-1 (2000 images): torch {torch_top1:.2f}, OpenVINO fp32 {fp32:.2f}, int8 {int8:.2f}")
    assert fp32 == pytest.approx(torch_top1, abs=0.1)
    assert fp32 > 30.0, fp32                   # really trained (chance: 10 %)
    assert abs(int8 - fp32) <= 1.0, (fp32, int8)
    ir_xml = open(tmp_path / "int8.xml").read()
    assert "FakeQuantize" in ir_xml or "FakeConvert" in ir_xml    # really quantized


# ------------------------------------------------------------------------------------ quantizer noise
def test_known_noise_is_dropped_and_real_warnings_pass(caplog, capsys):
    """quiet_known_noise drops onnxruntime's per-tensor fallback line for 1-D weights and torch's missing
    CUDA toolkit line, and nothing else: onnxruntime's other warnings, the same text from another logger,
    and everything after the block still reach the handlers; stdout goes to stderr within."""
    import logging
    from deploy.quantize import quiet_known_noise
    noise = "Axis 1 is out-of-range for weight 'features.norm_last.weight' with rank 1"
    real = ["only support per-channel quantization on weight. Tensor: conv.weight is not quantized.",
            "Axis 1 is out-of-range for weight 'conv.weight' with rank 4"]     # a real weight that lost its axis
    caplog.set_level(logging.WARNING)
    with quiet_known_noise():
        logging.warning(noise)
        logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='%s'",
                                                               "/usr/local")
        for message in real:
            logging.warning(message)
        logging.getLogger("cdn").warning(noise)
        print("Statistics collection 100%")
    logging.warning(noise)
    assert [(r.name, r.getMessage()) for r in caplog.records] == \
        [("root", m) for m in real] + [("cdn", noise), ("root", noise)]
    out, err = capsys.readouterr()
    assert out == "" and "Statistics collection" in err
