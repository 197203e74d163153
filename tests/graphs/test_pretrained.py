"""Transfer learning: pretrained= (path, URL served by a local HTTP server, registry tag), a new head
on a class-count change, condensation state, converted-model fine-tuning, the folder data set and its
class names. Every download goes to a temporary TORCH_HOME."""
import hashlib
import http.server
import math
import os
import socket
import threading

import pytest
import torch
import torch.nn.functional as F

from commands.predict import format_predictions, predict_images
from datasets import build_loaders, resolve_class_names
from datasets.transforms import eval_transform
from datasets.folder import load_folder, stratified_subset
from graphs.models import create_model
from graphs.models.hub import cache_path_for, load_pretrained, resolve_pretrained
from utils.errors import CheckpointError, ConfigError, DataError
from graphs.models.pretrained import PretrainedCfg, WeightEntry
from tests.conftest import tiny_settings

CPU = torch.device("cpu")
TINY = {"condensenet_50": dict(stages=(2, 2, 2)), "cdnv2_110": dict(stages=(2, 2, 2)),
        "densenet_bc_100": dict(stages=(2, 2, 2)), "rexnet_1_0": {}, "rexnet_lite_1_0": {}}


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _randomised(model, seed=0):
    """Every float tensor random (so 'bit-identical' cannot pass by two models sharing an init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running_var" in n]:
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def _cache_files(home):
    folder = os.path.join(home, "hub", "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


# ------------------------------------------------------------------ a new head, every family
@pytest.mark.parametrize("name,converted", [("condensenet_50", False), ("condensenet_50", True),
                                            ("cdnv2_110", False), ("cdnv2_110", True),
                                            ("densenet_bc_100", False), ("rexnet_1_0", False),
                                            ("rexnet_lite_1_0", False)])
def test_new_head_loads_everything_else_bit_identical(tmp_path, name, converted):
    src = _randomised(create_model(name, num_classes=10, converted=converted, **TINY[name]))
    if not converted and hasattr(src, "set_progress"):
        src.set_progress(1.0)                      # final masks: the condensed training-time model
    path = tmp_path / "w.pth"
    torch.save({"state_dict": src.state_dict(), "epoch": 7}, path)   # a checkpoint wrapper, too
    saved = torch.load(path, weights_only=True)["state_dict"]

    model = create_model(name, num_classes=3, converted=converted, **TINY[name])
    info = load_pretrained(model, str(path))
    head = set(info["reset_keys"])
    assert info["new_head"] and info["file_classes"] == 10 and info["model_classes"] == 3
    expected_head = {"condensenet_50": {"classifier.linear.weight", "classifier.linear.bias"} if converted
                     else {"classifier.weight", "classifier.bias"},
                     "rexnet_1_0": {"output.1.weight", "output.1.bias"},
                     "rexnet_lite_1_0": {"output.4.weight", "output.4.bias"}}.get(name, {"classifier.weight",
                                                                                         "classifier.bias"})
    assert head == expected_head
    own = model.state_dict()
    assert set(own) == set(saved)
    for k, v in saved.items():
        if k in head:
            assert own[k].shape[0] == 3 and v.shape[0] == 10
        else:
            assert torch.equal(own[k], v), k          # backbone, masks, stage, pruned-classifier index
    # the head is re-initialised as the family's own init does
    bias = own[next(k for k in head if k.endswith("bias"))]
    weight = own[next(k for k in head if k.endswith("weight"))]
    fan_in = weight[0].numel()
    if name in ("condensenet_50", "densenet_bc_100"):
        assert torch.count_nonzero(bias) == 0              # their _initialize zeroes Linear biases
    else:
        assert 0 < bias.abs().max() <= 1 / math.sqrt(fan_in)   # PyTorch's default (official: no init)
    assert weight.abs().max() <= 1 / math.sqrt(fan_in)     # kaiming_uniform(a=sqrt(5)) bound
    model.eval()
    size = 64 if name.startswith("rexnet") else 32
    assert model(torch.randn(2, 3, size, size)).shape == (2, 3)


def test_same_class_count_loads_strictly_and_logs_one_line(tmp_path, caplog):
    src = _randomised(create_model("rexnet_lite_1_0", num_classes=5))
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = create_model("rexnet_lite_1_0", num_classes=5)
    with caplog.at_level("INFO", logger="graphs.models.hub"):
        info = load_pretrained(model, str(tmp_path / "w.pth"))
    assert not info["new_head"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    assert len([r for r in caplog.records if r.name == "graphs.models.hub"]) == 1


def test_new_head_logs_one_line(tmp_path, caplog):
    torch.save(create_model("cdnv2_110", num_classes=10, **TINY["cdnv2_110"]).state_dict(), tmp_path / "w.pth")
    with caplog.at_level("INFO", logger="graphs.models.hub"):
        load_pretrained(create_model("cdnv2_110", num_classes=4, **TINY["cdnv2_110"]), str(tmp_path / "w.pth"))
    lines = [r.getMessage() for r in caplog.records if r.name == "graphs.models.hub"]
    assert len(lines) == 1 and "10 classes" in lines[0] and "re-initialised" in lines[0]


def test_condensation_state_is_kept_and_lr0_training_changes_nothing(tmp_path):
    src = _randomised(create_model("condensenet_50", num_classes=10, **TINY["condensenet_50"]))
    src.set_progress(0.3)                           # C=4: stage 1 of 3, masks partly pruned
    stage = src.condensation_stage()
    assert stage == (1, 3)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = create_model("condensenet_50", num_classes=4, **TINY["condensenet_50"])
    load_pretrained(model, str(tmp_path / "w.pth"))
    assert model.condensation_stage() == stage      # the host mirror was refreshed from the buffers
    assert model.set_progress(0.0) == 0             # a fresh schedule at progress 0 prunes nothing
    # "fine-tune" with lr=0: parameters and masks stay bit-identical to the file
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
    for _ in range(2):
        opt.zero_grad()
        model.set_progress(1e-3)                    # what the Trainer does before each step
        F.cross_entropy(model(x), y).backward()
        opt.step()
    saved = torch.load(tmp_path / "w.pth", weights_only=True)
    for k, v in model.state_dict().items():
        if not k.startswith("classifier.") and ("_mask" in k or "_stage" in k or k in dict(model.named_parameters())):
            assert torch.equal(v, saved[k]), k


def test_recondense_resets_masks_and_restarts_the_schedule():
    model = create_model("condensenet_50", num_classes=10, **TINY["condensenet_50"])
    model.set_progress(1.0)
    assert model.condensation_stage() == (3, 3)
    model.reset_condensation()
    assert model.condensation_stage() == (0, 3)
    assert all(bool((m._mask == 1).all()) and float(m._count) == 0 for m in model.condensing_modules())
    assert model.set_progress(0.3) > 0              # pruning starts again
    with pytest.raises(ConfigError, match="converted"):
        create_model("condensenet_50", converted=True, **TINY["condensenet_50"]).reset_condensation()


FAMILY = {"densenet_bc_100": "DenseNet-BC", "condensenet_50": "CondenseNet", "cdnv2_110": "CondenseNetV2",
          "rexnet_1_0": "ReXNet", "rexnet_lite_1_0": "ReXNet-lite"}


@pytest.mark.parametrize("src,dst", list(zip(FAMILY, list(FAMILY)[1:] + list(FAMILY)[:1]))
                         + [("rexnet_1_0", "rexnet_lite_1_0"), ("cdnv2_110", "condensenet_50")])
def test_weights_of_another_family_get_one_sentence(tmp_path, src, dst):
    torch.save(create_model(src, num_classes=10, **TINY[src]).state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as e:
        load_pretrained(create_model(dst, num_classes=3, **TINY[dst]), str(tmp_path / "w.pth"))
    assert str(e.value) == (f"{tmp_path / 'w.pth'} holds {FAMILY[src]} weights but the model is {FAMILY[dst]}; "
                            f"build a {FAMILY[src]} model or choose weights of this family")


def test_same_family_other_width_keeps_the_width_hint(tmp_path):
    torch.save(create_model("rexnet_1_0").state_dict(), tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="looks like width 1.0"):
        load_pretrained(create_model("rexnet_1_3", num_classes=3), str(tmp_path / "w.pth"))


def test_converted_file_into_training_time_model_gets_the_hint(tmp_path):
    conv = create_model("condensenet_50", num_classes=10, converted=True, **TINY["condensenet_50"])
    torch.save(conv.state_dict(), tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="converted=True"):
        load_pretrained(create_model("condensenet_50", num_classes=3, **TINY["condensenet_50"]),
                        str(tmp_path / "c.pth"))


# ------------------------------------------------------------------ URLs: a real local HTTP server
class _Server:
    """Routes path -> (status, headers, body, declared Content-Length or None)."""

    def __init__(self):
        self.routes, self.hits = {}, {}
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits[self.path] = hits.get(self.path, 0) + 1
                status, headers, body, length = routes.get(self.path, (404, {}, b"not found", None))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def add(self, path, body, status=200, ctype="application/octet-stream", length=None):
        self.routes[path] = (status, {"Content-Type": ctype}, body, length)
        return self.url(path)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def weight_bytes(tmp_path):
    model = _randomised(create_model("condensenet_50", num_classes=10, **TINY["condensenet_50"]))
    path = tmp_path / "src.pth"
    torch.save(model.state_dict(), path)
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest(), model


def test_url_download_with_hash_in_file_name_then_cache(server, weight_bytes, torch_home):
    data, digest, src = weight_bytes
    url = server.add(f"/w/cdn50-{digest[:8]}.pth", data)
    model = create_model("condensenet_50", num_classes=10, **TINY["condensenet_50"])
    info = load_pretrained(model, url, progress=False)
    expected = os.path.join(torch_home, "hub", "checkpoints", f"cdn50-{digest[:8]}.pth")
    assert info["path"] == expected and open(expected, "rb").read() == data
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), src.state_dict().values()))
    assert resolve_pretrained(url, progress=False) == expected     # the second time: from the cache
    assert server.hits[f"/w/cdn50-{digest[:8]}.pth"] == 1
    assert _cache_files(torch_home) == [f"cdn50-{digest[:8]}.pth"]


def test_hash_mismatch_is_refused_and_nothing_is_cached(server, weight_bytes, torch_home):
    data, digest, _ = weight_bytes
    wrong = "0123abcd" if not digest.startswith("0123abcd") else "fedc9876"
    url = server.add(f"/cdn50-{wrong}.pth", data)
    with pytest.raises(CheckpointError) as e:
        resolve_pretrained(url, progress=False)
    msg = str(e.value)
    assert url in msg and wrong in msg and os.path.join(torch_home, "hub", "checkpoints", f"cdn50-{wrong}.pth") in msg
    assert _cache_files(torch_home) == []           # neither the file nor a partial download


def test_cached_copy_with_wrong_hash_is_deleted_not_used(weight_bytes, torch_home):
    data, digest, _ = weight_bytes
    url = f"http://127.0.0.1:{_closed_port()}/cdn50-{digest[:8]}.pth"
    cached = cache_path_for(url)
    os.makedirs(os.path.dirname(cached))
    with open(cached, "wb") as f:
        f.write(data[:-10] + b"0123456789")         # same size, other bytes
    with pytest.raises(CheckpointError, match="unreachable"):
        resolve_pretrained(url, progress=False)
    assert not os.path.exists(cached)


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_url_names_the_url_and_the_cache_path(torch_home):
    url = f"http://127.0.0.1:{_closed_port()}/rexnet_1.0.pth"
    with pytest.raises(CheckpointError) as e:
        load_pretrained(create_model("rexnet_1_0"), url, progress=False)
    msg = str(e.value)
    assert url in msg and os.path.join(torch_home, "hub", "checkpoints", "rexnet_1.0.pth") in msg
    assert "\n" not in msg


@pytest.mark.parametrize("ctype,body", [("text/html; charset=utf-8", b"<html><body>Sign in</body></html>"),
                                        ("application/octet-stream",   # Google Drive's confirmation page
                                         b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning"),
                                        ])
def test_html_pages_are_refused(server, torch_home, ctype, body):
    url = server.add("/uc", body, ctype=ctype)
    entry = WeightEntry(url=url, file_name="rexnet_3.0.pth", note="open the Google Drive link and save the file")
    cfg = PretrainedCfg(weights={"official": entry})
    with pytest.raises(CheckpointError, match="web page") as e:
        resolve_pretrained("official", cfg, progress=False)
    assert os.path.join(torch_home, "hub", "checkpoints", "rexnet_3.0.pth") in str(e.value)
    assert "open the Google Drive link" in str(e.value)
    assert _cache_files(torch_home) == []


def test_http_error_is_refused(server, torch_home):
    url = server.url("/missing.pth")
    with pytest.raises(CheckpointError, match="HTTP 404"):
        resolve_pretrained(url, progress=False)
    assert _cache_files(torch_home) == []


def test_truncated_download_is_refused(server, weight_bytes, torch_home):
    data, _, _ = weight_bytes
    url = server.add("/short.pth", data[:1000], length=len(data))
    with pytest.raises(CheckpointError, match="truncated|broke off") as e:
        resolve_pretrained(url, progress=False)
    assert url in str(e.value)
    assert _cache_files(torch_home) == []


def test_registry_tag_with_entry_hash_and_unknown_tag(server, weight_bytes, torch_home):
    data, digest, src = weight_bytes
    url = server.add("/download?id=abc", data)
    cfg = PretrainedCfg(weights={"official": WeightEntry(url=url, file_name="converted_x.pth", hash=digest[:10]),
                                 "timm": WeightEntry(url=url, file_name="x-timm.pth")})
    model = create_model("condensenet_50", num_classes=2, **TINY["condensenet_50"])
    info = load_pretrained(model, "official", pretrained_cfg=cfg, progress=False)
    assert info["path"].endswith(os.path.join("checkpoints", "converted_x.pth")) and info["new_head"]
    # the model's own pretrained_cfg is used when none is given (what the registry attaches)
    again = create_model("condensenet_50", num_classes=2, **TINY["condensenet_50"])
    again.pretrained_cfg = again.pretrained_cfg.replace(weights=cfg.weights)
    assert load_pretrained(again, "official", progress=False)["path"] == info["path"]
    assert server.hits["/download?id=abc"] == 1      # the second load came from the cache
    with pytest.raises(ConfigError, match="unknown pretrained tag 'oficial'.*did you mean 'official'.*official, timm"):
        resolve_pretrained("oficial", cfg)
    with pytest.raises(ConfigError, match="publishes no weights"):
        resolve_pretrained("official", PretrainedCfg())
    bad = PretrainedCfg(weights={"official": WeightEntry(url=url, file_name="y.pth", hash="00000000")})
    with pytest.raises(CheckpointError, match="00000000"):
        resolve_pretrained("official", bad, progress=False)


def test_file_url_and_missing_path(tmp_path, weight_bytes):
    data, _, _ = weight_bytes
    (tmp_path / "a b.pth").write_bytes(data)
    assert resolve_pretrained((tmp_path / "a b.pth").as_uri()) == str(tmp_path / "a b.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_pretrained(str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="scheme"):
        resolve_pretrained("ftp://example.org/w.pth")


# ------------------------------------------------------------------ fine-tuning the converted graph
@pytest.mark.parametrize("name", ["condensenet_50", "cdnv2_110"])
def test_converted_model_fine_tunes_and_exports(tmp_path, name):
    from deploy.export import export_onnx

    torch.manual_seed(0)
    dense = create_model(name, num_classes=10, **TINY[name])
    dense.set_progress(1.0)
    torch.save(dense.convert().state_dict(), tmp_path / "converted.pth")
    model = create_model(name, num_classes=5, converted=True, **TINY[name])
    load_pretrained(model, str(tmp_path / "converted.pth"))
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    bn_before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    losses = []
    for step in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if step == 0:   # gradients reach every parameter: through index_select, grouped convs, index_add
            no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
            assert no_grad == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.01
    assert all(not torch.equal(b, bn_before[n]) for n, b in model.named_buffers() if n in bn_before)  # BN trains
    torch.save(model.state_dict(), tmp_path / "tuned.pth")
    again = create_model(name, num_classes=5, converted=True, **TINY[name])
    load_pretrained(again, str(tmp_path / "tuned.pth"))
    model.eval()
    again.eval()
    assert torch.equal(again(x), model(x))
    result = export_onnx(again, str(tmp_path / "m.onnx"), input_size=(3, 32, 32))
    assert result["max_abs_diff"] is not None and result["max_abs_diff"] < 1e-4


# ------------------------------------------------------------------ the folder data set
def _image(path, color, size=(40, 36)):
    from PIL import Image
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _make_tree(root, classes=("dog", "cat", "emu"), n_train=6, n_val=2):
    exts = (".png", ".webp", ".bmp", ".tif", ".gif", ".jpg")
    colors = {"cat": (200, 30, 30), "dog": (30, 200, 30), "emu": (30, 30, 200)}
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            for i in range(n):
                _image(os.path.join(root, split, c, f"img{i}{exts[i % len(exts)]}"), colors.get(c, (9, 9, 9)))
    return root


def _cfg(root, **kw):
    base = dict(dataset="folder", data_root=str(root), batch_size=4, val_batch_size=None, num_workers=0,
                seed=0, input_size=32, crop_pct=1.0, hflip=0.0, train_subset=None, val_subset=None)
    base.update(kw)
    return tiny_settings(**base)


def test_folder_dataset_class_names_formats_and_mean_std(tmp_path):
    root = _make_tree(tmp_path / "data")
    (tmp_path / "data" / "train" / "cat" / "notes.txt").write_text("not an image")
    tr, va = build_loaders(_cfg(root), PretrainedCfg(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), CPU)
    assert tr.class_names == va.class_names == ["cat", "dog", "emu"]
    assert va.readable_class_names == ["cat", "dog", "emu"] and tr.dataset_name == "folder"
    assert tr.dataset_size == 18 and va.dataset_size == 6
    paths = [p for p, _ in tr.dataset.samples]
    assert any(p.endswith(".webp") for p in paths) and any(p.endswith(".bmp") for p in paths)
    assert any(p.endswith(".gif") for p in paths) and not any(p.endswith(".txt") for p in paths)
    x, y = next(iter(va))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    # cat is (200, 30, 30): channel 0 normalised with mean 0.5 / std 0.25 -> (200/255 - 0.5) / 0.25
    assert abs(float(x[0, 0].mean()) - (200 / 255 - 0.5) / 0.25) < 0.02
    # the model's pretrained_cfg mean/std (the agent puts the config's mean/std keys there), else ImageNet's
    _, va2 = build_loaders(_cfg(root), PretrainedCfg(mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5)), CPU)
    assert va2.mean == pytest.approx((0.1, 0.2, 0.3))
    _, va3 = build_loaders(_cfg(root), None, CPU)
    assert va3.mean == pytest.approx((0.485, 0.456, 0.406))


def test_stratified_subset_is_balanced_and_fixed():
    samples = [(f"c{c}/{i}.png", c) for c in range(10) for i in range(5)]
    pick = stratified_subset(samples, 20)
    counts = [sum(1 for _, t in pick if t == c) for c in range(10)]
    assert counts == [2] * 10                        # the first 20 sorted samples would be classes 0-3
    assert pick == stratified_subset(samples, 20) and pick == sorted(pick, key=samples.index)
    odd = stratified_subset(samples, 13)
    assert sorted(sum(1 for _, t in odd if t == c) for c in range(10)) == [1] * 7 + [2] * 3
    assert stratified_subset(samples, None) == samples and stratified_subset(samples, 999) == samples
    uneven = [(str(i), 0) for i in range(10)] + [("x", 1)]
    assert sorted(t for _, t in stratified_subset(uneven, 4)) == [0, 0, 0, 1]


def test_folder_and_imagenet_subsets_take_every_class(tmp_path):
    root = _make_tree(tmp_path / "data")
    for dataset in ("folder", "imagenet"):
        tr, va = build_loaders(_cfg(root, dataset=dataset, train_subset=3, val_subset=3), None, CPU)
        assert sorted(t for _, t in tr.dataset.samples) == [0, 1, 2], dataset
        assert sorted(t for _, t in va.dataset.samples) == [0, 1, 2], dataset


def test_folder_errors_are_one_sentence(tmp_path):
    with pytest.raises(DataError, match="train.*does not exist"):
        load_folder(tmp_path / "empty")
    root = _make_tree(tmp_path / "a")
    os.makedirs(root / "train" / "fox")
    (root / "train" / "fox" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="fox holds no readable image"):
        load_folder(root)
    root = _make_tree(tmp_path / "b")
    _image(os.path.join(root, "train", "fox", "a.png"), (1, 2, 3))
    with pytest.raises(DataError, match="fox are only in train/"):
        load_folder(root)
    (tmp_path / "c" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        load_folder(tmp_path / "c")


# ------------------------------------------------------------------ class names for predict
def test_class_names_from_checkpoint_then_folder(tmp_path):
    root = _make_tree(tmp_path / "data")
    assert resolve_class_names(3, {"class_names": ["a", "b", "c"]}, "folder", str(root)) == ["a", "b", "c"]
    assert resolve_class_names(3, {"model": {}}, "folder", str(root)) == ["cat", "dog", "emu"]
    assert resolve_class_names(3, None, "folder", str(tmp_path / "nowhere")) == ["class_0", "class_1", "class_2"]
    with pytest.raises(CheckpointError, match="stores 2 class names but the model has 3"):
        resolve_class_names(3, {"class_names": ["a", "b"]})


def test_predict_prints_folder_class_names(tmp_path):
    root = _make_tree(tmp_path / "data")
    model = create_model("condensenet_50", num_classes=3, **TINY["condensenet_50"])
    names = resolve_class_names(3, None, "folder", str(root))
    tf = eval_transform(PretrainedCfg(input_size=(3, 32, 32), crop_pct=1.0), mean=(0.5,) * 3, std=(0.25,) * 3)
    out = format_predictions(predict_images(model, [str(root / "val" / "emu" / "img1.webp")], tf, names, topk=3))
    assert "img1.webp:" in out and all(n in out for n in ("cat", "dog", "emu"))


# ------------------------------------------------------------------ freeze_backbone_epochs building block
def test_frozen_backbone_stays_bit_identical_while_the_head_trains():
    from graphs.models.finetune import head_parameter_names, set_backbone_frozen

    model = _randomised(create_model("cdnv2_110", num_classes=4, **TINY["cdnv2_110"]))
    model.set_progress(1.0)
    assert head_parameter_names(model) == {"classifier.weight", "classifier.bias"}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 4, (4,))
    model.train()
    n = set_backbone_frozen(model, True)
    assert n == len(list(model.parameters())) - 2
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}   # backbone params AND BN statistics as loaded
    set_backbone_frozen(model, False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert not torch.equal(model.state_dict()["features.init_conv.weight"], before["features.init_conv.weight"])


# ------------------------------------------------------------------ official and timm layouts
@pytest.mark.parametrize("converted,fname,out", [(False, "unconverted_state_dict.pth", "output_unconverted.pth"),
                                                  (True, "converted_state_dict.pth", "output_converted.pth")])
def test_official_condensenet_files_with_and_without_a_new_head(fixture_dir, converted, fname, out):
    x = torch.load(fixture_dir / "input.pth", map_location="cpu")
    same = create_model("condensenet_50", num_classes=10, converted=converted)
    assert not load_pretrained(same, str(fixture_dir / fname))["new_head"]
    same.eval()
    with torch.no_grad():    # the official code's own logits
        assert torch.allclose(same(x), torch.load(fixture_dir / out, map_location="cpu"), atol=1e-5)
    new = create_model("condensenet_50", num_classes=4, converted=converted)
    assert load_pretrained(new, str(fixture_dir / fname))["new_head"]
    new.eval()
    with torch.no_grad():
        assert torch.equal(new.forward_features(x), same.forward_features(x)) and new(x).shape == (len(x), 4)
    if not converted:
        assert new.condensation_stage() == (3, 3) and new.set_progress(0.0) == 0


def test_official_v2_converted_layout_float_index_with_a_new_head(tmp_path):
    """The official converted CondenseNetV2 stores each SFR index as a float C x C 0/1 matrix."""
    dense = _randomised(create_model("cdnv2_110", num_classes=10, **TINY["cdnv2_110"]))
    dense.set_progress(1.0)
    conv = dense.convert()
    state = conv.state_dict()
    for name, m in conv.named_modules():
        if name.endswith(".sfr"):
            state[name + ".index"] = m.index_matrix()
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "official.pth")
    model = create_model("cdnv2_110", num_classes=3, converted=True, **TINY["cdnv2_110"])
    assert load_pretrained(model, str(tmp_path / "official.pth"))["new_head"]
    for name, m in conv.named_modules():
        if name.endswith(".sfr"):
            assert torch.equal(model.get_submodule(name).index, m.index)
    model.eval()
    conv.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), conv.forward_features(x))


def test_timm_layout_rexnet_with_a_new_head(tmp_path):
    from graphs.models.layouts import to_timm_state_dict

    src = _randomised(create_model("rexnet_1_0", num_classes=10))
    torch.save(to_timm_state_dict(src.state_dict()), tmp_path / "rexnetv1_100-00000000.pth")
    model = create_model("rexnet_1_0", num_classes=3)
    info = load_pretrained(model, str(tmp_path / "rexnetv1_100-00000000.pth"))   # local: no hash check
    assert info["new_head"] and info["reset_keys"] == ["output.1.weight", "output.1.bias"]
    for k, v in src.state_dict().items():
        if not k.startswith("output.1."):
            assert torch.equal(model.state_dict()[k], v), k


def test_pretrain_then_fine_tune_on_a_folder_data_set_with_lr0(tmp_path):
    """The acceptance path without the Trainer: a 10-class training-time file, a 3-class folder data set,
    one epoch of SGD at lr=0: backbone parameters and masks bit-identical to the file, head of 3."""
    src = _randomised(create_model("condensenet_50", num_classes=10, **TINY["condensenet_50"]))
    src.set_progress(1.0)
    torch.save(src.state_dict(), tmp_path / "pretrained.pth")
    train_loader, _ = build_loaders(_cfg(_make_tree(tmp_path / "data")), None, CPU)
    model = create_model("condensenet_50", num_classes=len(train_loader.class_names), **TINY["condensenet_50"])
    load_pretrained(model, str(tmp_path / "pretrained.pth"))
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-4)
    model.train()
    for x, y in train_loader:
        model.set_progress(0.5)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    saved = torch.load(tmp_path / "pretrained.pth", weights_only=True)
    params = dict(model.named_parameters())
    for k, v in model.state_dict().items():
        if k.startswith("classifier."):
            assert v.shape[0] == 3
        elif k in params or k.endswith(("_mask", "_stage", "_count")):
            assert torch.equal(v, saved[k]), k
