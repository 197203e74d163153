"""COCO data (datasets/coco.py) and COCO box AP (engine/coco_eval.py) on a generated COCO-format set."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from datasets.coco import CocoIndex, CocoLoader, GroupedBatchPlan, aspect_ratio_groups, build_coco
from datasets.loader import loader_settings
from datasets.synthetic import COCO_CATEGORIES, make_coco_set
from engine.coco_eval import evaluate_coco, to_coco_results
from utils.errors import DataError
from tests.conftest import tiny_settings


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    """A generated set on procedural backgrounds (these tests need no real photos)."""
    return make_coco_set(tmp_path_factory.mktemp("coco"), n_train=12, n_val=6, seed=1, archive=None)


def _copy(root, tmp_path):
    dest = tmp_path / "coco"
    shutil.copytree(root, dest)
    return dest


def _edit(root, split, fn):
    path = root / "annotations" / f"instances_{split}2017.json"
    data = json.loads(path.read_text())
    data = fn(data)
    path.write_text(json.dumps(data))


def _raw(root, split):
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


def test_the_demo_tool_writes_a_set_the_coco_reader_takes(tmp_path):
    """tools/make_coco_demo.py, the first command of docs/detection.md's short run, on random textures."""
    dest = tmp_path / "demo"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_coco_demo.py"), str(dest), "3", "2",
                        "--backgrounds", str(tmp_path / "no_photos.tar.gz")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    for split, n in (("train", 3), ("val", 2)):
        raw = _raw(dest, split)
        assert len(raw["images"]) == n and {a["category_id"] for a in raw["annotations"]} <= {3, 7, 11}
        for entry in raw["images"]:
            assert Image.open(dest / f"{split}2017" / entry["file_name"]).size == (entry["width"], entry["height"])
    assert len(CocoIndex(str(dest), "val", train=False).samples) == 2


# ------------------------------------------------------------------ categories, crowd boxes
def test_category_ids_map_to_contiguous_labels_and_back(coco_root):
    ix = CocoIndex(str(coco_root), "val", train=False)
    assert ix.cat_ids == [3, 7, 11]
    assert ix.cat_to_label == {3: 1, 7: 2, 11: 3}
    assert ix.label_to_cat[1:] == [3, 7, 11]
    assert ix.class_names == [c["name"] for c in COCO_CATEGORIES]
    # every sample's labels map back to the categories of the raw annotations of that image
    raw = _raw(coco_root, "val")
    for path, iid, w, h, boxes, labels in ix.samples:
        want = sorted(a["category_id"] for a in raw["annotations"] if a["image_id"] == iid)
        assert sorted(ix.label_to_cat[int(l)] for l in labels) == want


def test_crowd_boxes_are_left_out_of_training_targets(coco_root):
    raw = _raw(coco_root, "train")
    crowd = [a for a in raw["annotations"] if a["iscrowd"]]
    assert len(crowd) == 2
    ix = CocoIndex(str(coco_root), "train", train=True)
    assert ix.crowd_boxes == 2
    n_boxes = sum(len(s[4]) for s in ix.samples)
    assert n_boxes == len(raw["annotations"]) - 2
    for a in crowd:   # the crowd box of that image is not among its targets
        x, y, w, h = a["bbox"]
        s = next(s for s in ix.samples if s[1] == a["image_id"])
        assert not any(torch.allclose(b, torch.tensor([x, y, x + w, y + h], dtype=torch.float32)) for b in s[4])
    assert len(ix.coco_gt["annotations"]) == len(raw["annotations"])  # kept for evaluation (ignored regions)


# ------------------------------------------------------------------ AP
def _gt_as_predictions(ix):
    return {s[1]: dict(boxes=s[4], labels=s[5], scores=torch.ones(len(s[5]))) for s in ix.samples}


def test_ground_truth_as_predictions_gives_ap_1(coco_root):
    ix = CocoIndex(str(coco_root), "val", train=False)
    ap = evaluate_coco(ix.coco_gt, _gt_as_predictions(ix), ix.label_to_cat)
    assert ap["AP"] == pytest.approx(1.0) and ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)
    # the result dicts carry the ORIGINAL (non-contiguous) category ids
    results = to_coco_results(_gt_as_predictions(ix), ix.label_to_cat)
    assert {r["category_id"] for r in results} <= {3, 7, 11}
    # a wrong mapping (labels taken as category ids) does not score
    wrong = evaluate_coco(ix.coco_gt, _gt_as_predictions(ix), list(range(20)))
    assert wrong["AP"] < 0.5


def test_annotations_without_area_are_scored_like_those_with_it(coco_root, tmp_path):
    """Tools that write boxes only leave out "area", which COCOeval's size ranges read (it raised KeyError):
    the box's w*h stands in, so AP and every size-range AP are those of the file that has it."""
    root = _copy(coco_root, tmp_path)
    _edit(root, "val", lambda d: dict(d, annotations=[dict(a, area=a["bbox"][2] * a["bbox"][3])
                                                      for a in d["annotations"]]))
    with_area = CocoIndex(str(root), "val", train=False)
    shifted = {iid: dict(p, boxes=p["boxes"] + 3.0) for iid, p in _gt_as_predictions(with_area).items()}
    expected = evaluate_coco(with_area.coco_gt, shifted, with_area.label_to_cat)
    _edit(root, "val", lambda d: dict(d, annotations=[{k: v for k, v in a.items() if k != "area"}
                                                      for a in d["annotations"]]))
    without = CocoIndex(str(root), "val", train=False)
    assert evaluate_coco(without.coco_gt, shifted, without.label_to_cat) == expected
    assert 0 < expected["AP"] < 1


def _one_box_gt():
    return dict(images=[dict(id=1, file_name="a.jpg", width=400, height=400)],
                annotations=[dict(id=1, image_id=1, category_id=7, bbox=[100, 100, 100, 100], area=10000,
                                  iscrowd=0)],
                categories=[dict(id=7, name="x")])


def test_shifted_box_lowers_ap_by_the_hand_computed_amount():
    # GT 100x100 at (100, 100); prediction shifted right by 20 px: IoU = 80*100 / (2*10000 - 8000) = 2/3.
    # It matches at the IoU thresholds 0.50, 0.55, 0.60, 0.65 (4 of the 10), with precision 1 at recall
    # 1 each time: AP = 4/10 = 0.4, AP50 = 1, AP75 = 0. Area 10000 > 96^2: a "large" object.
    pred = {1: dict(boxes=torch.tensor([[120.0, 100.0, 220.0, 200.0]]), labels=torch.tensor([1]),
                    scores=torch.tensor([0.9]))}
    ap = evaluate_coco(_one_box_gt(), pred, [0, 7])
    assert ap["AP"] == pytest.approx(0.4)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(0.0)
    assert ap["APl"] == pytest.approx(0.4) and ap["APs"] == -1.0 and ap["APm"] == -1.0
    exact = {1: dict(boxes=torch.tensor([[100.0, 100.0, 200.0, 200.0]]), labels=torch.tensor([1]),
                     scores=torch.tensor([0.9]))}
    assert evaluate_coco(_one_box_gt(), exact, [0, 7])["AP"] == pytest.approx(1.0)


def test_no_predictions_give_zero_ap():
    assert evaluate_coco(_one_box_gt(), {}, [0, 7]) == dict(AP=0.0, AP50=0.0, AP75=0.0, APs=0.0, APm=0.0, APl=0.0)
    empty = {1: dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), scores=torch.zeros(0))}
    assert evaluate_coco(_one_box_gt(), empty, [0, 7])["AP"] == 0.0


# ------------------------------------------------------------------ bad input
def test_missing_annotation_file(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    os.remove(root / "annotations" / "instances_val2017.json")
    with pytest.raises(DataError, match="instances_val2017.json does not exist"):
        CocoIndex(str(root), "val", train=False)


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "not a COCO instances file"),
    ('{"images": [], "annotations": []}', "no 'categories' list"),
    ("{not json", "not valid JSON"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "lacks one of"),
])
def test_json_that_is_not_coco(coco_root, tmp_path, content, match):
    root = _copy(coco_root, tmp_path)
    (root / "annotations" / "instances_train2017.json").write_text(content)
    with pytest.raises(DataError, match=match):
        CocoIndex(str(root), "train", train=True)


def test_listed_image_missing_on_disk(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    victim = sorted((root / "val2017").iterdir())[2]
    os.remove(victim)
    ix = CocoIndex(str(root), "val", train=False)
    with pytest.raises(DataError, match=f"{victim.name} is listed in the annotations but missing on disk"):
        CocoLoader(ix, batch_size=2, train=False, device="cpu")


def test_box_with_non_positive_size_errors_or_is_skipped(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)

    def zero_width(data):
        data["annotations"][0]["bbox"][2] = 0
        data["annotations"][1]["bbox"][3] = -5
        return data
    _edit(root, "train", zero_width)
    with pytest.raises(DataError, match="non-positive width or height"):
        CocoIndex(str(root), "train", train=True, bad_images="error")
    ix = CocoIndex(str(root), "train", train=True, bad_images="skip")
    assert ix.skipped_boxes == 2
    raw = _raw(root, "train")
    assert sum(len(s[4]) for s in ix.samples) == len(raw["annotations"]) - 2 - 2   # 2 bad, 2 crowd


def test_category_not_in_categories(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)

    def unknown(data):
        data["annotations"][3]["category_id"] = 5
        return data
    _edit(root, "val", unknown)
    with pytest.raises(DataError, match="category_id 5, which is not in 'categories'"):
        CocoIndex(str(root), "val", train=False)


def test_unreadable_image_errors_or_is_skipped(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    victim = sorted((root / "val2017").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    ld = CocoLoader(CocoIndex(str(root), "val", train=False), batch_size=2, train=False, device="cpu")
    with pytest.raises(DataError, match=f"cannot read image .*{victim.name}"):
        list(ld)
    ld = CocoLoader(CocoIndex(str(root), "val", train=False, bad_images="skip"), batch_size=2, train=False,
                    device="cpu", bad_images="skip")
    n = sum(len(images) for images, _ in ld)
    assert n == 5 and ld.skipped_images == 1


# ------------------------------------------------------------------ batches: grouping, shards, resume
def test_aspect_ratio_groups_match_torchvision_bins():
    # torchvision create_aspect_ratio_groups(k=3): bins 2**linspace(-1, 1, 7) = 0.5, 0.63, 0.79, 1, 1.26, ...
    assert aspect_ratio_groups([0.4, 0.5, 0.7, 1.0, 1.1, 1.9, 2.0, 3.0]) == [0, 1, 2, 4, 4, 6, 7, 7]


def test_grouped_batches_shard_and_resume_exactly():
    groups = [i % 3 for i in range(23)]
    plans = [GroupedBatchPlan(groups, 4, r, 2, train=True, seed=5, drop_last=False) for r in range(2)]
    seen = []
    for p in plans:
        p.set_epoch(3)
        batches = [b for _, b in p.batches()]
        assert len(batches) == len(p) == 3            # ceil(12 / 4) on both ranks (padded shards)
        full = [b for b in batches if len(b) == 4]
        assert sum(len(set(groups[i] for i in b)) == 1 for b in full) >= len(full) - 1   # only leftovers mix
        seen += [i for b in batches for i in b]
        p.set_epoch(3, start_batch=1)                 # resume at batch 1: exactly the tail
        assert [b for _, b in p.batches()] == batches[1:]
    assert set(seen) == set(range(23))                # every sample, padded by repeats to 24
    p = plans[0]
    p.set_epoch(3)
    e3 = [b for _, b in p.batches()]
    p.set_epoch(4)
    assert [b for _, b in p.batches()] != e3          # a new order each epoch


def test_loader_resume_reproduces_images_flips_and_targets(coco_root):
    def loader():
        return CocoLoader(CocoIndex(str(coco_root), "train", train=True), batch_size=2, train=True, device="cpu",
                          seed=3, hflip=0.5)
    a = loader()
    a.set_epoch(2)
    full = list(a)
    b = loader()
    b.set_epoch(2, start_batch=3)
    tail = list(b)
    assert len(full) == 6 and len(tail) == 3
    for (ia, ta), (ib, tb) in zip(full[3:], tail):
        assert all(torch.equal(x, y) for x, y in zip(ia, ib))
        assert all(torch.equal(x["boxes"], y["boxes"]) and int(x["image_id"]) == int(y["image_id"])
                   for x, y in zip(ta, tb))


def test_flip_mirrors_image_and_boxes(coco_root):
    ix = CocoIndex(str(coco_root), "train", train=True)
    from datasets.coco import _CocoSamples
    ds = _CocoSamples(ix)
    img, t = ds[(0, False)]
    fimg, ft = ds[(0, True)]
    w = img.shape[-1]
    assert torch.equal(fimg, img.flip(-1))
    assert torch.allclose(ft["boxes"][:, [0, 2]], w - t["boxes"][:, [2, 0]])
    assert torch.equal(ft["boxes"][:, [1, 3]], t["boxes"][:, [1, 3]])


def test_build_coco_from_config_keys(coco_root):
    cfg = tiny_settings(dataset="coco", data_root=str(coco_root), batch_size=4, val_batch_size=2, num_workers=0,
                        train_subset=8, seed=0)
    train, val = build_coco(cfg, None, "cpu", 1, 2, loader_settings(cfg, 2))
    assert train.batch_size == 2 and len(train) == 2 and train.dataset_size == 8
    assert val.image_ids == [s[1] for s in CocoIndex(str(coco_root), "val", train=False).samples]
    images, targets = next(iter(train))
    assert all(im.dtype == torch.float32 and im.max() <= 1 for im in images)
    assert all(t["labels"].min() >= 1 and t["labels"].max() <= 3 for t in targets)


# ------------------------------------------------------------------ decoding (datasets.decode)
def _exif_rotated_copy(path):
    """Store the image at ``path`` as a phone does: turned 90 degrees, with EXIF orientation 6."""
    upright = Image.open(path).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif.tobytes())
    return np.asarray(upright).astype(int)


def test_phone_photo_is_read_in_the_orientation_its_annotation_describes(coco_root, tmp_path):
    root = _copy(coco_root, tmp_path)
    from datasets.coco import _CocoSamples
    ix = CocoIndex(str(root), "val", train=False)
    i = next(k for k, s in enumerate(ix.samples) if s[2] != s[3])        # a non-square image
    path, iid, w, h, boxes, _ = ix.samples[i]
    upright = _exif_rotated_copy(path)
    assert Image.open(path).size == (h, w)                                # stored turned
    img, target = _CocoSamples(ix)[(i, False)]
    assert img.shape == (3, h, w) and torch.equal(target["boxes"], boxes)  # upright, boxes as annotated
    assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - upright).mean() < 4

    def stored_size(data):       # an annotation tool that ignored the tag recorded the stored size
        im = next(im for im in data["images"] if im["id"] == iid)
        im["width"], im["height"] = int(h), int(w)
        return data
    _edit(root, "val", stored_size)
    ix = CocoIndex(str(root), "val", train=False)
    img, target = _CocoSamples(ix)[(i, False)]
    assert img.shape == (3, w, h) and torch.equal(target["boxes"], ix.samples[i][4])   # not rescaled


def test_pixel_limit_reaches_the_coco_loader(coco_root):
    cfg = tiny_settings(dataset="coco", data_root=str(coco_root), batch_size=2, num_workers=1, seed=0,
                        max_image_pixels=1000)
    _, val = build_coco(cfg, None, "cpu", 0, 1, loader_settings(cfg, 1))
    with pytest.raises(DataError, match=r"is \d+ x \d+ pixels .*max_image_pixels = 1000"):
        next(iter(val))


# ------------------------------------------------------------------ sets that cannot be trained or scored
def _without_boxes_in(data, image_ids, crowd_only=()):
    """Annotations of ``image_ids`` removed; those of ``crowd_only`` turned into crowd boxes."""
    data["annotations"] = [dict(a, iscrowd=1) if a["image_id"] in crowd_only else a
                           for a in data["annotations"] if a["image_id"] not in image_ids]
    return data


def test_unusable_training_images_are_counted_and_a_val_set_without_boxes_stops_before_training(
        coco_root, tmp_path, capsys, tiny_detection_config):
    """Through main.py: the training images left out (3 without annotations, 1 with crowd boxes only, 1
    whose only box lies outside it) are one warning line; a validation set whose images have no box (or
    only crowd boxes, which COCO AP ignores) is one sentence, exit 2, before any training (it used to end
    the run with AP -1.00)."""
    import main
    root = _copy(coco_root, tmp_path)
    train_ids = [im["id"] for im in _raw(root, "train")["images"]]

    def unusable(data):
        data = _without_boxes_in(data, train_ids[2:5], crowd_only=[train_ids[5]])
        outside = next(im for im in data["images"] if im["id"] == train_ids[6])
        data["annotations"] = [dict(a, bbox=[outside["width"] + 5, 0, 20, 20]) if a["image_id"] == train_ids[6]
                               else a for a in data["annotations"]]
        return data
    _edit(root, "train", unusable)
    val_ids = [im["id"] for im in _raw(root, "val")["images"]]
    _edit(root, "val", lambda d: _without_boxes_in(d, val_ids[:3], crowd_only=val_ids[3:]))
    path = tiny_detection_config(root)
    assert main.main([path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("instances_train2017.json: 5 of 12 training images have no usable box and are left out "
                           "(1 whose boxes are empty, invalid or outside the image, 1 with crowd boxes only, "
                           "3 without annotations)"), err
    assert len(err) == 2 and err[1].startswith("error: none of the 6 validation images of ") and \
        err[1].endswith("has a non-crowd box, so COCO AP cannot be computed; give validation images with box "
                        "annotations"), err
    assert not (tmp_path / "exp" / "det" / "metrics.csv").exists()

    # the first val_subset images may be the unannotated ones; an empty image list is refused as before
    _edit(root, "val", lambda d: dict(_raw(coco_root, "val"), annotations=[a for a in _raw(coco_root, "val")[
        "annotations"] if a["image_id"] not in val_ids[:2]]))
    assert main.main([path, "--set", "val_subset=2"]) == 2
    assert "none of the 2 validation images (the first val_subset images)" in capsys.readouterr().err
    _edit(root, "val", lambda d: dict(d, images=[], annotations=[]))
    assert main.main([path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and err[-1].endswith("instances_val2017.json lists no image; check the "
                                                               "annotation file"), err
