"""commands/plots.py: every plot writes a real PNG (magic bytes, > 1 kB) atomically from synthetic inputs."""
import os

import numpy as np
import pytest

from commands.plots import plot_confusion_matrix, plot_reuse_heatmaps, plot_training_curves, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 1024, (path, len(data))
    leftovers = [n for n in os.listdir(os.path.dirname(path)) if ".tmp-" in n]
    assert not leftovers, leftovers


def write_metrics(path, header, rows):
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        for row in rows:
            f.write(",".join("" if v is None else str(v) for v in row) + "\n")


def test_training_curves_with_sparse_validation(tmp_path):
    header = ["epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
              "ema_val_top1", "time"]
    rows = []
    for e in range(30):
        measured = e % 5 == 4
        rows.append([e, 0.1 * (1 + np.cos(np.pi * e / 30)) / 2, 2.3 - 0.05 * e, 10 + 2 * e, 30 + 2 * e,
                     2.4 - 0.05 * e if measured else None, 8 + 2 * e if measured else None,
                     25 + 2 * e if measured else None, 9 + 2 * e if measured else None, 12.5])
    rows.append(rows[-1])  # a resumed run may write the same epoch again
    csv_path = tmp_path / "run" / "metrics.csv"
    csv_path.parent.mkdir()
    write_metrics(csv_path, header, rows)
    cols = read_metrics(csv_path)
    assert len(cols["epoch"]) == 30 and np.isnan(cols["val_top1"][0]) and cols["val_top1"][4] == 16
    out = tmp_path / "plots" / "curves.png"
    assert plot_training_curves(csv_path, out) == str(out)
    assert_png(str(out))


def test_training_curves_minimal_and_header_only(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    header = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1"]
    write_metrics(csv_path, header, [[0, 0.1, 2.0, 20.0, None, None]])
    assert_png(plot_training_curves(csv_path, tmp_path / "one.png"))
    write_metrics(csv_path, header, [])
    assert_png(plot_training_curves(csv_path, tmp_path / "empty.png"))
    write_metrics(csv_path, ["step", "loss"], [[1, 2.0]])
    with pytest.raises(ValueError, match="epoch"):
        plot_training_curves(csv_path, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def reuse_matrix(targets, sources, seed):
    """Lower-triangular visibility, as for layers of one dense block (NaN where not visible)."""
    rng = np.random.default_rng(seed)
    m = rng.random((targets, sources))
    for t in range(targets):
        m[t, t + 1:] = np.nan
    return m


def test_reuse_heatmaps(tmp_path):
    matrices = {"lgc": reuse_matrix(14, 14, 0), "sfr": reuse_matrix(14, 14, 1)}
    paths = plot_reuse_heatmaps(matrices, tmp_path / "heat", "CondenseNet-86")
    assert [os.path.basename(p) for p in paths] == ["reuse_lgc.png", "reactivation_sfr.png"]
    for p in paths:
        assert_png(p)
    # only 'lgc' (CondenseNet v1), an all-NaN row, and per-block panels
    m = reuse_matrix(8, 8, 2)
    m[0] = np.nan
    paths = plot_reuse_heatmaps({"lgc": [m, reuse_matrix(8, 8, 3)], "sfr": None}, tmp_path / "v1", "cdn50")
    assert len(paths) == 1
    assert_png(paths[0])
    with pytest.raises(ValueError, match="2-D"):
        plot_reuse_heatmaps({"lgc": np.zeros(5)}, tmp_path / "bad", "x")


@pytest.mark.parametrize("k", [3, 10, 20, 100])
def test_confusion_matrix(tmp_path, k):
    rng = np.random.default_rng(k)
    cm = rng.integers(0, 5, size=(k, k)) + np.diag(rng.integers(20, 50, size=k))
    cm[0] = 0  # a class never seen: its row stays 0
    names = [f"class_{i}" for i in range(k)]
    out = plot_confusion_matrix(cm, names, tmp_path / f"cm{k}.png")
    assert_png(out)


def test_confusion_matrix_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="too large"):
        plot_confusion_matrix(np.eye(101, dtype=int), None, tmp_path / "big.png")
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix(np.zeros((3, 4), dtype=int), None, tmp_path / "rect.png")
    with pytest.raises(ValueError, match="names"):
        plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b"], tmp_path / "names.png")
    assert_png(plot_confusion_matrix(np.eye(4, dtype=int), None, tmp_path / "nonames.png"))
