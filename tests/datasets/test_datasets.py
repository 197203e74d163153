"""datasets/: CIFAR readers, synthetic set, ImageFolder path, augmentation, sharding, resume, errors."""
import pickle

import numpy as np
import pytest
import torch

from datasets import build_loaders, list_datasets
from datasets.loader import InMemoryLoader, shard_indices
from datasets.transforms import random_crop_flip
from utils.errors import ConfigError, DataError
from graphs.models.pretrained import PretrainedCfg
from tests.conftest import tiny_settings

CPU = torch.device("cpu")
C10_MEAN, C10_STD = (0.4914, 0.4824, 0.4467), (0.2471, 0.2435, 0.2616)
C100_MEAN, C100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
IMAGENET_DATA_CFG = PretrainedCfg(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic",
                                  mean=None, std=None)


def cfg(**kw):
    base = dict(dataset="cifar10", data_root=".", download=False, batch_size=8, val_batch_size=None,
                num_workers=0, pin_memory=False, drop_last=False, train_subset=None, val_subset=None,
                seed=0, input_size=None, crop_pct=None, eval_interpolation=None,
                train_interpolation="bilinear", hflip=0.5, auto_augment=None, reprob=0.0,
                remode="pixel", synthetic_train_size=64, synthetic_val_size=32,
                synthetic_shape=[3, 32, 32], num_classes=10, bad_images="error", channels_last=False)
    base.update(kw)
    return tiny_settings(**base)


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def _images(n, seed):
    return np.random.RandomState(seed).randint(0, 256, (n, 3072), dtype=np.uint8)


def write_cifar10(root, per_batch=6, n_test=5):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                           "data": _images(per_batch, i),
                                           "labels": [(i + j) % 10 for j in range(per_batch)],
                                           "filenames": [f"f{i}_{j}.png" for j in range(per_batch)]})
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": _images(n_test, 99),
                                  "labels": [j % 10 for j in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": names,
                                    "num_vis": 3072})
    return folder


def write_cifar100(root, n_train=12, n_test=7):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("test", n_test, 2)):
        _dump(folder / split, {"filenames": [f"{j}.png" for j in range(n)], "batch_label": split,
                               "fine_labels": [(7 * j) % 100 for j in range(n)],
                               "coarse_labels": [j % 20 for j in range(n)], "data": _images(n, seed)})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


def unnormalise(x, mean, std):
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((x * s + m) * 255).round().clamp(0, 255).to(torch.uint8)


def ref_crop(img, dy, dx, flip, pad=4):
    """Per-image reference: zero-pad, take the window at (dy, dx), optionally mirror it."""
    c, h, w = img.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad, dtype=img.dtype)
    padded[:, pad:pad + h, pad:pad + w] = img
    win = padded[:, dy:dy + h, dx:dx + w]
    return win.flip(2) if flip else win


def find_crop(out, img, pad=4):
    """All (dy, dx, flip) for which the reference crop of ``img`` equals ``out``."""
    return [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (0, 1)
            if torch.equal(ref_crop(img, dy, dx, f, pad), out)]


def id_loader(n, *, train, batch_size, rank=0, world_size=1, seed=0, drop_last=False):
    """A loader whose labels are the sample ids (no augmentation), to inspect the order."""
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    return InMemoryLoader(images, torch.arange(n), [str(i) for i in range(n)], batch_size=batch_size,
                          train=train, device=CPU, mean=(0.5,), std=(0.25,), rank=rank,
                          world_size=world_size, seed=seed, drop_last=drop_last)


def epoch_ids(loader, epoch, start_batch=0):
    loader.set_epoch(epoch, start_batch)
    return [y.tolist() for _, y in loader]


# ------------------------------------------------------------------ registry and config
def test_list_datasets_and_unknown_name():
    assert list_datasets() == ["cifar10", "cifar100", "coco", "folder", "imagenet", "synthetic"]
    with pytest.raises(ConfigError) as e:
        build_loaders(cfg(dataset="cifar11"), None, CPU)
    assert "cifar10" in str(e.value) and "synthetic" in str(e.value)


def test_global_batch_must_divide_world_size(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="multiple"):
        build_loaders(cfg(data_root=str(tmp_path), batch_size=9), None, CPU, rank=0, world_size=2)
    tr, va = build_loaders(cfg(data_root=str(tmp_path), batch_size=8), None, CPU, rank=1, world_size=2)
    assert tr.batch_size == 4 and va.batch_size == 4


# ------------------------------------------------------------------ CIFAR readers
def test_cifar10_reader_small(tmp_path):
    write_cifar10(tmp_path, per_batch=6, n_test=5)
    tr, va = build_loaders(cfg(data_root=str(tmp_path), batch_size=4), None, CPU)
    assert (tr.dataset_size, va.dataset_size, tr.num_classes) == (30, 5, 10)
    assert tr.class_names[0] == "airplane" and tr.class_names[-1] == "truck"
    assert tr.images.shape == (30, 3, 32, 32) and tr.images.dtype == torch.uint8
    assert tr.labels.dtype == torch.int64
    assert tr.labels[:6].tolist() == [1, 2, 3, 4, 5, 6] and tr.labels[6:8].tolist() == [2, 3]
    raw = torch.from_numpy(_images(6, 1)).view(6, 3, 32, 32)
    assert torch.equal(tr.images[:6], raw)
    # eval: normalisation only, with the CIFAR-10 constants of the reference recipe
    x, y = next(iter(va))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    raw = torch.from_numpy(_images(5, 99)).view(5, 3, 32, 32).float() / 255
    ref = (raw - torch.tensor(C10_MEAN).view(1, 3, 1, 1)) / torch.tensor(C10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref[:4], atol=1e-5, rtol=0)
    assert y.tolist() == [0, 1, 2, 3]
    assert len(va) == 2 and [len(b) for b, _ in va] == [4, 1]
    assert tr.mean == pytest.approx(C10_MEAN) and tr.std == pytest.approx(C10_STD)


def test_cifar100_reader_small(tmp_path):
    write_cifar100(tmp_path, n_train=12, n_test=7)
    tr, va = build_loaders(cfg(dataset="cifar100", data_root=str(tmp_path), batch_size=4), None, CPU)
    assert (tr.dataset_size, va.dataset_size, tr.num_classes) == (12, 7, 100)
    assert tr.class_names[:2] == ["fine0", "fine1"] and len(tr.class_names) == 100
    assert tr.labels.tolist() == [(7 * j) % 100 for j in range(12)]  # fine, not coarse, labels
    assert tr.mean == pytest.approx(C100_MEAN) and tr.std == pytest.approx(C100_STD)
    x, _ = next(iter(va))
    raw = torch.from_numpy(_images(7, 2)).view(7, 3, 32, 32).float()[:4] / 255
    ref = (raw - torch.tensor(C100_MEAN).view(1, 3, 1, 1)) / torch.tensor(C100_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref, atol=1e-5, rtol=0)


def test_subsets_and_model_mean_std(tmp_path):
    write_cifar10(tmp_path)
    tr, va = build_loaders(cfg(data_root=str(tmp_path), train_subset=7, val_subset=3),
                           PretrainedCfg(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)), CPU)
    assert tr.dataset_size == 7 and va.dataset_size == 3 and tr.num_samples == 7
    assert torch.equal(tr.labels, torch.tensor([1, 2, 3, 4, 5, 6, 2]))
    assert va.mean == (0.5, 0.5, 0.5)


def test_real_cifar10(cifar10_root):
    tr, va = build_loaders(cfg(data_root=str(cifar10_root), batch_size=64), None, CPU)
    assert tr.dataset_size == 50000 and va.dataset_size == 10000
    assert tr.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                              "ship", "truck"]
    assert len(tr) == 782 and len(va) == 157  # no drop_last: the last train batch has 16 images
    assert torch.bincount(tr.labels).tolist() == [5000] * 10
    assert torch.bincount(va.labels).tolist() == [1000] * 10
    x, y = next(iter(tr))
    assert x.shape == (64, 3, 32, 32) and y.shape == (64,)
    # the train mean/std of the pixels matches the recipe constants (JPEG copy: loose tolerance)
    px = tr.images[:5000].float().div(255)
    assert px.mean((0, 2, 3)).tolist() == pytest.approx(C10_MEAN, abs=0.01)
    assert px.std((0, 2, 3)).tolist() == pytest.approx(C10_STD, abs=0.01)


# ------------------------------------------------------------------ augmentation
def test_crop_flip_matches_reference_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=g)  # no zero pixels
    offsets = torch.tensor([[0, 0], [8, 8], [0, 8], [8, 0], [4, 4], [3, 6]])
    flips = [0, 1, 0, 1, 1, 0]
    out = random_crop_flip(x, offsets, torch.tensor([i for i, f in enumerate(flips) if f]), 4)
    for i in range(6):
        assert torch.equal(out[i], ref_crop(x[i], *offsets[i].tolist(), flips[i])), i
    # offset (0, 0): the top 4 rows and left 4 columns are the zero padding
    assert (out[0, :, :4] == 0).all() and (out[0, :, :, :4] == 0).all() and (out[0, :, 4:, 4:] > 0).all()
    # offset (8, 8) flipped: zero rows at the bottom; after the mirror the zero columns are on the left
    assert (out[1, :, -4:] == 0).all() and (out[1, :, :, :4] == 0).all()
    assert torch.equal(out[4], x[4].flip(2))  # centred window + flip = plain mirror image


def test_train_batches_are_real_crops_and_deterministic(tmp_path):
    write_cifar10(tmp_path, per_batch=40, n_test=4)
    tr, _ = build_loaders(cfg(data_root=str(tmp_path), batch_size=50), None, CPU)
    tr.set_epoch(3)
    seen = list(tr)
    # the order is DistributedSampler's (checked below); each sample is one padded crop/flip of its source
    order = shard_indices(200, 0, 1, shuffle=True, seed=0, epoch=3)
    params = []
    for b in (0, 3):
        x, y = seen[b]
        raw = unnormalise(x, C10_MEAN, C10_STD)
        for i in range(len(x)):
            src = order[b * 50 + i]
            found = find_crop(raw[i], tr.images[src])
            assert len(found) == 1, f"batch {b} sample {i} is not a zero-padded crop/flip of its image"
            assert y[i] == tr.labels[src]
            params.append(found[0])
    # offsets and flips are drawn per sample
    assert len({p[:2] for p in params}) > 20 and 25 < sum(p[2] for p in params) < 75
    tr.set_epoch(3)
    again = list(tr)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(seen, again))
    tr.set_epoch(4)
    assert not torch.equal(seen[0][0], next(iter(tr))[0])  # a new epoch: new order and crops


def test_augmentation_depends_on_epoch_batch_and_rank():
    # every sample is the same image, so only the augmentation (not the order) can differ
    img = torch.randint(1, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))

    def batches(epoch, rank=0):
        ld = InMemoryLoader(img.expand(32, -1, -1, -1), torch.zeros(32, dtype=torch.int64), ["a"],
                            batch_size=8, train=True, device=CPU, mean=(0.5,) * 3, std=(0.25,) * 3,
                            rank=rank, world_size=2, seed=0, crop_padding=4, hflip=0.5)
        ld.set_epoch(epoch)
        return [x for x, _ in ld]

    e0, e0_again, e1, r1 = batches(0), batches(0), batches(1), batches(0, rank=1)
    assert all(torch.equal(a, b) for a, b in zip(e0, e0_again))
    assert not torch.equal(e0[0], e1[0]) and not torch.equal(e0[0], e0[1]) and not torch.equal(e0[0], r1[0])


def test_same_seed_same_loader_and_different_seed(tmp_path):
    write_cifar10(tmp_path)
    a, _ = build_loaders(cfg(data_root=str(tmp_path)), None, CPU)
    b, _ = build_loaders(cfg(data_root=str(tmp_path)), None, CPU)
    c, _ = build_loaders(cfg(data_root=str(tmp_path), seed=1), None, CPU)
    xa, xb, xc = next(iter(a))[0], next(iter(b))[0], next(iter(c))[0]
    assert torch.equal(xa, xb) and not torch.equal(xa, xc)


def test_resume_mid_epoch_is_exact(tmp_path):
    write_cifar10(tmp_path)
    tr, _ = build_loaders(cfg(data_root=str(tmp_path), batch_size=4), None, CPU)
    tr.set_epoch(2)
    full = list(tr)
    assert len(full) == len(tr) == 8
    fresh, _ = build_loaders(cfg(data_root=str(tmp_path), batch_size=4), None, CPU)
    fresh.set_epoch(2, start_batch=5)
    assert len(fresh) == 8  # len is the full epoch; iteration yields batches 5..7
    resumed = list(fresh)
    assert len(resumed) == 3
    for (x, y), (rx, ry) in zip(full[5:], resumed):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_channels_last(tmp_path):
    write_cifar10(tmp_path)
    tr, va = build_loaders(cfg(data_root=str(tmp_path), channels_last=True), None, CPU)
    for ld in (tr, va):
        x, _ = next(iter(ld))
        assert x.is_contiguous(memory_format=torch.channels_last) and x.shape[1:] == (3, 32, 32)


# ------------------------------------------------------------------ sharding
def test_train_order_matches_distributed_sampler():
    from torch.utils.data.distributed import DistributedSampler
    for rank in range(3):
        ref = DistributedSampler(range(10), num_replicas=3, rank=rank, shuffle=True, seed=5)
        ref.set_epoch(7)
        ld = id_loader(10, train=True, batch_size=2, rank=rank, world_size=3, seed=5)
        assert sum(epoch_ids(ld, 7), []) == list(ref)


def test_two_rank_train_shards_disjoint_and_cover():
    n = 11
    shards = [sum(epoch_ids(id_loader(n, train=True, batch_size=2, rank=r, world_size=2), 1), [])
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0 + 1)).tolist()
    padded = perm + perm[:1]
    assert shards[0] == padded[0::2] and shards[1] == padded[1::2]  # disjoint positions
    assert sorted(shards[0] + shards[1]) == sorted(padded) and set(shards[0] + shards[1]) == set(range(n))
    # an even split is disjoint as samples too
    even = [set(sum(epoch_ids(id_loader(12, train=True, batch_size=3, rank=r, world_size=2), 0), []))
            for r in range(2)]
    assert not even[0] & even[1] and even[0] | even[1] == set(range(12))
    # drop_last drops this rank's incomplete last batch
    ld = id_loader(n, train=True, batch_size=4, rank=0, world_size=2, drop_last=True)
    assert len(ld) == 1 and ld.num_samples == 4 and len(epoch_ids(ld, 0)) == 1


def test_val_shards_cover_every_sample_once():
    n, w = 10, 3
    shards = []
    for r in range(w):
        ld = id_loader(n, train=False, batch_size=3, rank=r, world_size=w)
        ids = epoch_ids(ld, 4)
        shards.append(sum(ids, []))
        assert ld.num_samples == len(shards[-1])
        assert shards[-1] == list(range(r, n, w))  # unshuffled, no padding
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(sum(shards, [])) == list(range(n))


# ------------------------------------------------------------------ synthetic
def test_synthetic_deterministic_and_learnable():
    c = cfg(dataset="synthetic", synthetic_train_size=400, synthetic_val_size=200, num_classes=5,
            batch_size=50, seed=3)
    tr, va = build_loaders(c, None, CPU)
    tr2, _ = build_loaders(c, None, CPU)
    assert torch.equal(tr.images, tr2.images) and torch.equal(tr.labels, tr2.labels)
    other, _ = build_loaders(cfg(dataset="synthetic", num_classes=5, seed=4, synthetic_train_size=400),
                             None, CPU)
    assert not torch.equal(tr.images, other.images)
    assert tr.images.shape == (400, 3, 32, 32) and tr.num_classes == 5 and va.dataset_size == 200
    # learnable: nearest class mean (from train) classifies val far above chance (20%)
    means = torch.stack([tr.images[tr.labels == k].float().mean(0) for k in range(5)])
    dist = torch.cdist(va.images.float().flatten(1), means.flatten(1))
    acc = (dist.argmin(1) == va.labels).float().mean().item()
    assert acc > 0.9
    x, y = next(iter(tr))
    assert x.shape == (50, 3, 32, 32) and y.dtype == torch.int64
    other_shape, _ = build_loaders(cfg(dataset="synthetic", synthetic_shape=[1, 20, 24]), None, CPU)
    assert next(iter(other_shape))[0].shape == (8, 1, 20, 24)


# ------------------------------------------------------------------ errors
def test_missing_cifar_root(tmp_path):
    with pytest.raises(DataError) as e:
        build_loaders(cfg(data_root=str(tmp_path / "nowhere")), None, CPU)
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "download" in msg


def test_download_failure_is_data_error(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu

    def offline(*a, **k):
        raise OSError("Network is unreachable")
    monkeypatch.setattr(tvu, "download_and_extract_archive", offline)
    with pytest.raises(DataError, match="could not be downloaded"):
        build_loaders(cfg(dataset="cifar100", data_root=str(tmp_path), download=True), None, CPU)


def test_truncated_pickle(tmp_path):
    folder = write_cifar10(tmp_path)
    data = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(data[:len(data) // 2])
    with pytest.raises(DataError) as e:
        build_loaders(cfg(data_root=str(tmp_path)), None, CPU)
    assert "data_batch_3" in str(e.value) and "truncated or corrupt" in str(e.value)


@pytest.mark.parametrize("bad", ["columns", "dtype", "labels"])
def test_wrong_shapes(tmp_path, bad):
    folder = write_cifar10(tmp_path)
    batch = {"data": _images(6, 1), "labels": list(range(6))}
    if bad == "columns":
        batch["data"] = batch["data"][:, :1000]
    elif bad == "dtype":
        batch["data"] = batch["data"].astype(np.float32)
    else:
        batch["labels"] = batch["labels"][:5]
    _dump(folder / "data_batch_2", batch)
    with pytest.raises(DataError, match="data_batch_2"):
        build_loaders(cfg(data_root=str(tmp_path)), None, CPU)


def _write_folder(root, n_per_class=3, size=(40, 30)):
    from PIL import Image
    rng = np.random.RandomState(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_per_class):
                arr = rng.randint(0, 256, size + (3,), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_empty_and_missing_image_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "train")):
        build_loaders(cfg(dataset="imagenet", data_root=str(tmp_path)), IMAGENET_DATA_CFG, CPU)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="no images"):
        build_loaders(cfg(dataset="imagenet", data_root=str(tmp_path)), IMAGENET_DATA_CFG, CPU)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_skip_and_error(tmp_path, workers):
    _write_folder(tmp_path)
    (tmp_path / "val" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    c = cfg(dataset="imagenet", data_root=str(tmp_path), batch_size=4, input_size=16, crop_pct=1.0,
            bad_images="skip", num_workers=workers)
    _, va = build_loaders(c, IMAGENET_DATA_CFG, CPU)
    assert va.dataset_size == 7 and va.class_names == ["cat", "dog"]
    got = list(va)
    assert sum(len(y) for _, y in got) == 6 and va.skipped_images == 1
    assert got[0][0].shape == (4, 3, 16, 16)
    c = c.replace(bad_images="error")
    _, va = build_loaders(c, IMAGENET_DATA_CFG, CPU)
    with pytest.raises(DataError, match="broken.jpg"):
        list(va)


def test_folder_train_resume_and_erasing(tmp_path):
    _write_folder(tmp_path, n_per_class=5)
    c = cfg(dataset="imagenet", data_root=str(tmp_path), batch_size=3, input_size=24,
            auto_augment="rand-m9-mstd0.5", reprob=0.5, train_interpolation="random")
    tr, _ = build_loaders(c, IMAGENET_DATA_CFG, CPU)
    tr.set_epoch(1)
    full = list(tr)
    assert len(full) == len(tr) == 4 and full[0][0].shape == (3, 3, 24, 24)
    tr.set_epoch(1, start_batch=2)
    resumed = list(tr)
    assert len(resumed) == 2
    for (x, y), (rx, ry) in zip(full[2:], resumed):
        assert torch.equal(y, ry) and torch.equal(x, rx)
    tr.set_epoch(2)
    assert not torch.equal(next(iter(tr))[0], full[0][0])


def test_imagenet_sample(imagenet_sample_root):
    c = cfg(dataset="imagenet", data_root=str(imagenet_sample_root), batch_size=8, val_subset=16,
            train_subset=16, auto_augment="rand-m9-mstd0.5", reprob=0.2, train_interpolation="random")
    tr, va = build_loaders(c, IMAGENET_DATA_CFG, CPU)
    assert tr.num_classes == va.num_classes == 1000 and va.class_names[0] == "n01440764"
    assert va.readable_class_names[0] == "tench" and len(va.readable_class_names) == 1000
    x, y = next(iter(va))
    # one image per class: the class-balanced val_subset of 16 is 16 different classes, in class order
    assert x.shape == (8, 3, 224, 224) and x.dtype == torch.float32 and y.tolist() == sorted(set(y.tolist()))
    assert len({t for _, t in va.dataset.samples}) == 16
    assert -2.2 < x.min() and x.max() < 2.7  # normalised with the ImageNet constants
    x, y = next(iter(tr))
    assert x.shape == (8, 3, 224, 224) and torch.isfinite(x).all()


def test_imagenet_statistics_are_timms():
    """The data set's statistics (datasets) and the weights' normalisation (graphs) are ImageNet's, as timm has them."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from datasets import imagenet
    from graphs.models import pretrained
    assert imagenet.MEAN == pretrained.IMAGENET_DEFAULT_MEAN == IMAGENET_DEFAULT_MEAN
    assert imagenet.STD == pretrained.IMAGENET_DEFAULT_STD == IMAGENET_DEFAULT_STD
