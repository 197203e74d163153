"""Prediction utility: image loading, eval transform, class names, top-k output."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from commands.predict import expand_image_paths, format_predictions, predict_images
from datasets import class_names_for, dataset_mean_std, eval_transform as _eval_transform
from datasets.cifar import CIFAR10_CLASSES
from datasets.decode import decode_image
from graphs.models import create_model
from utils.errors import ConfigError, DataError
from graphs.models.pretrained import PretrainedCfg


def eval_transform(cfg, **kw):
    """The eval transform with CIFAR-10's constants where the model's cfg has none."""
    mean, std = kw.pop("mean", None), kw.pop("std", None)
    default_mean, default_std = dataset_mean_std("cifar10")
    return _eval_transform(cfg, mean or default_mean, std or default_std, **kw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three real image files of different sizes and modes, written with PIL."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    rgb = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB")
    rgb.save(folder / "a.png")
    paths.append(folder / "a.png")
    gray = Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L")
    gray.save(folder / "b.jpg")
    paths.append(folder / "b.jpg")
    rgba = Image.fromarray(rng.integers(0, 256, (64, 48, 4), dtype=np.uint8), "RGBA")
    rgba.save(folder / "c.png")
    paths.append(folder / "c.png")
    return [str(p) for p in paths]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("densenet_bc_100", stages=(1, 1, 1), growth=(2, 2, 2), num_classes=10)
    with torch.no_grad():
        m.classifier.weight.normal_(0, 1)        # spread the probabilities a little
    return m


def test_predict_top5_sorted(model, images):
    transform = eval_transform(model.pretrained_cfg)
    names = class_names_for("cifar10", 10)
    model.train()
    results = predict_images(model, images, transform, names, topk=5, batch_size=2)
    assert model.training                                     # mode restored
    assert [p for p, _ in results] == images
    for _, top in results:
        assert len(top) == 5
        probs = [p for _, p in top]
        assert all(isinstance(n, str) and n in CIFAR10_CLASSES for n, _ in top)
        assert len({n for n, _ in top}) == 5
        assert probs == sorted(probs, reverse=True)
        assert all(0 <= p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    # the same numbers computed by hand for the first image
    x = transform(decode_image(images[0])).unsqueeze(0)
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(x), 1)[0]
    model.train()
    best = int(ref.argmax())
    assert results[0][1][0][0] == names[best]
    assert results[0][1][0][1] == pytest.approx(float(ref[best]), abs=1e-6)
    text = format_predictions(results)
    assert text.count("\n") == 2 and images[1] in text


def test_unreadable_image_is_data_error(model, images, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    transform = eval_transform(model.pretrained_cfg)
    with pytest.raises(DataError, match="broken.jpg") as err:
        predict_images(model, [images[0], str(bad)], transform, class_names_for("cifar10", 10))
    assert "\n" not in str(err.value)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(images[0], "rb").read()[:60])
    with pytest.raises(DataError, match="truncated.png"):
        decode_image(truncated)
    with pytest.raises(DataError, match="does not exist"):
        decode_image(tmp_path / "missing.png")


def test_skip_leaves_bad_files_out_but_not_all_of_them(model, images, tmp_path, caplog):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    transform, names = eval_transform(model.pretrained_cfg), class_names_for("cifar10", 10)
    results = predict_images(model, [images[0], str(bad), images[1]], transform, names, batch_size=1, bad_images="skip")
    assert [p for p, _ in results] == [images[0], images[1]]
    assert [r.getMessage() for r in caplog.records if "broken.png" in r.getMessage()] != []
    with pytest.raises(DataError, match="none of the 1 image"):
        predict_images(model, [str(bad)], transform, names, bad_images="skip")


def test_decode_image_rgb(images):
    for p in images:
        img = decode_image(p)
        assert img.mode == "RGB"


def test_expand_image_paths(images, tmp_path):
    folder = str(images[0]).rsplit("/", 1)[0]
    assert expand_image_paths(folder) == sorted(images)
    assert expand_image_paths([images[1]]) == [images[1]]
    with pytest.raises(DataError, match="no image files"):
        expand_image_paths(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        expand_image_paths(tmp_path / "nope.jpg")


def test_eval_transform_cifar(images):
    cfg = PretrainedCfg(input_size=(3, 32, 32), crop_pct=1.0, interpolation="bilinear", mean=None, std=None)
    t = eval_transform(cfg)
    resize, crop = t.transforms[0], t.transforms[1]
    assert isinstance(resize, T.Resize) and resize.size == 32
    assert isinstance(crop, T.CenterCrop) and tuple(crop.size) == (32, 32)
    x = t(decode_image(images[0]))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    # a model without its own constants takes the data set's: (v/255 - mean) / std by hand
    c = eval_transform(cfg, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(Image.new("RGB", (32, 32), (255, 0, 0)))
    torch.testing.assert_close(c[:, 0, 0], torch.tensor([2.0, -2.0, -2.0]))
    # a model's own constants win over the data set's
    own = eval_transform(cfg.replace(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)), mean=(0.5,) * 3, std=(0.25,) * 3)
    torch.testing.assert_close(own(Image.new("RGB", (32, 32), (255, 0, 0)))[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_eval_transform_imagenet(images):
    cfg = PretrainedCfg(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic")
    t = eval_transform(cfg)
    assert t.transforms[0].size == 256 and t.transforms[0].interpolation == T.InterpolationMode.BICUBIC
    assert t(decode_image(images[2])).shape == (3, 224, 224)
    t2 = eval_transform(cfg, input_size=128, crop_pct=1.0, interpolation="bilinear")
    assert t2.transforms[0].size == 128 and t2(decode_image(images[0])).shape == (3, 128, 128)
    with pytest.raises(ConfigError):
        eval_transform(cfg, interpolation="lanczos9")
    with pytest.raises(ConfigError, match="crop_pct"):
        eval_transform(cfg, crop_pct=1.5)


def test_class_names(tmp_path):
    imagenet = class_names_for("imagenet", 1000)
    assert len(imagenet) == 1000 and imagenet[0] == "tench" and imagenet[-1] == "toilet tissue"
    assert class_names_for("cifar10", 10) == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                              "horse", "ship", "truck"]     # the data set's batches.meta
    c100 = class_names_for("cifar100", 100)
    assert len(c100) == 100 and len(set(c100)) == 100 and c100[0] == "apple" and c100[-1] == "worm"
    assert class_names_for("synthetic", 3) == ["class_0", "class_1", "class_2"]
    assert class_names_for("cifar10", 7) == [f"class_{i}" for i in range(7)]
    # names from the data set's own meta file when it is there
    (tmp_path / "cifar-10-batches-py").mkdir()
    custom = [f"c{i}" for i in range(10)]
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in custom]}, f)
    assert class_names_for("cifar10", 10, data_root=tmp_path) == custom
    (tmp_path / "cifar-100-python").mkdir()
    with open(tmp_path / "cifar-100-python" / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    assert class_names_for("cifar100", 100, data_root=tmp_path)[99] == "f99"


def test_class_count_mismatch_is_config_error(model, images):
    with pytest.raises(ConfigError, match="10 outputs"):
        predict_images(model, images[:1], eval_transform(model.pretrained_cfg), ["a", "b"])
