"""Plots of a run: training curves, CondenseNet reuse heatmaps, confusion matrices.

Every function draws with matplotlib's Agg canvas (no pyplot, no display, no global backend
switch), writes one PNG atomically (utils.atomic_io) and returns the path it wrote.
"""
import csv
import math
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.atomic_io import atomic_write

_DPI = 120


def _new_figure(width, height):
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_png):
    """Write ``fig`` to ``out_png`` (its folder created if needed) atomically; return the path."""
    return atomic_write(out_png, lambda f: fig.savefig(f, format="png", dpi=_DPI), "plot", make_folder=True)


# --------------------------------------------------------------------------------------------------
# Training curves
# --------------------------------------------------------------------------------------------------

def _to_float(cell):
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def read_metrics(metrics_csv):
    """Columns of a metrics.csv as float arrays (NaN where a cell is empty), sorted by epoch.

    A row repeated for the same epoch (a resumed run) replaces the earlier one.
    """
    with open(metrics_csv, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in (reader.fieldnames or [])]
        if "epoch" not in fields:
            raise ValueError(f"{metrics_csv} has no 'epoch' column (columns: {', '.join(fields) or 'none'})")
        by_epoch = {}
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            epoch = _to_float(row.get("epoch"))
            if not math.isnan(epoch):
                by_epoch[epoch] = row
    epochs = sorted(by_epoch)
    return {c: np.array([_to_float(by_epoch[e].get(c)) for e in epochs], dtype=float) for c in fields}


def _plot_series(ax, x, y, label, style="-"):
    keep = ~np.isnan(y)
    if not keep.any():
        return False
    marker = "o" if keep.sum() <= 30 else None
    ax.plot(x[keep], y[keep], style, marker=marker, markersize=3, label=label)
    return True


def plot_training_curves(metrics_csv, out_png):
    """Loss, top-1 and learning rate against epoch from a metrics.csv; returns ``out_png``.

    Uses the columns that are present among train_loss/val_loss/ema_val_loss,
    train_top1/val_top1/ema_val_top1 (and the top-5 ones, dashed) and lr.
    """
    cols = read_metrics(metrics_csv)
    x = cols["epoch"]
    fig = _new_figure(13, 4)
    axes = fig.subplots(1, 3)
    panels = [
        (axes[0], "loss", [("train_loss", "-"), ("val_loss", "-"), ("ema_val_loss", "-")]),
        (axes[1], "top-1 accuracy (%)", [("train_top1", "-"), ("val_top1", "-"), ("ema_val_top1", "-"),
                                         ("train_top5", "--"), ("val_top5", "--"), ("ema_val_top5", "--")]),
        (axes[2], "learning rate", [("lr", "-")]),
    ]
    for ax, ylabel, series in panels:
        drawn = [_plot_series(ax, x, cols[name], name, style) for name, style in series if name in cols]
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if any(drawn):
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    if "val_top1" in cols and not np.isnan(cols["val_top1"]).all():
        best = int(np.nanargmax(cols["val_top1"]))
        axes[1].set_title(f"best val top-1 {cols['val_top1'][best]:.2f} at epoch {x[best]:g}", fontsize=9)
    axes[1].set_ylabel("top-1 / top-5 (%)" if any(c.endswith("top5") for c in cols) else "top-1 (%)")
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(metrics_csv))) or "training", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)


# --------------------------------------------------------------------------------------------------
# CondenseNet feature-reuse heatmaps (the paper's Figure 7(d) style)
# --------------------------------------------------------------------------------------------------

_HEATMAP_FILES = {"lgc": "reuse_lgc.png", "sfr": "reactivation_sfr.png"}
_HEATMAP_TITLES = {"lgc": "feature reuse (LGC)", "sfr": "feature reactivation (SFR)"}


def _heatmap(ax, matrix, title):
    m = np.array(matrix, dtype=float)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"a reuse matrix must be 2-D [targets, sources], got shape {m.shape}")
    m[~np.isfinite(m)] = np.nan
    m = np.abs(m)
    top = np.nanmax(m) if not np.isnan(m).all() else 0.0
    if top > 0:
        m = m / top  # normalised mean |w|: 1 = the strongest connection in the plot
    cmap = _cmap()
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto",
                      interpolation="nearest", origin="upper")
    ax.set_xlabel("source layer")
    ax.set_ylabel("target layer")
    ax.set_title(title, fontsize=10)
    return image


def _cmap():
    import matplotlib
    return matplotlib.colormaps["viridis"].with_extremes(bad="white")


def plot_reuse_heatmaps(matrices, out_dir, title_prefix=""):
    """One heatmap PNG per entry of ``matrices`` (the dict of a CondenseNet's ``reuse_matrices()``).

    Each value is an array [n_targets, n_sources] of mean |w| with NaN where the source is not
    visible to the target (or a list of such arrays, one panel each, e.g. one per dense block).
    x = source layer, y = target layer, colour = mean |w| normalised by its maximum, NaN blank.
    Files: ``reuse_lgc.png`` for 'lgc', ``reactivation_sfr.png`` for 'sfr', ``reuse_<key>.png``
    otherwise. Returns the list of paths written.
    """
    paths = []
    for key, value in matrices.items():
        if value is None:
            continue
        panels = list(value) if isinstance(value, (list, tuple)) else [value]
        if not panels:
            continue
        fig = _new_figure(4.5 * len(panels) + 0.8, 4.2)
        axes = np.atleast_1d(fig.subplots(1, len(panels)))
        name = _HEATMAP_TITLES.get(key, key)
        image = None
        for i, (ax, matrix) in enumerate(zip(axes, panels)):
            title = f"{title_prefix} {name}".strip() + (f" (block {i + 1})" if len(panels) > 1 else "")
            image = _heatmap(ax, matrix, title)
        fig.colorbar(image, ax=list(axes), label="normalised mean |w|", fraction=0.046, pad=0.04)
        paths.append(_save(fig, os.path.join(out_dir, _HEATMAP_FILES.get(key, f"reuse_{key}.png"))))
    return paths


# --------------------------------------------------------------------------------------------------
# Confusion matrix
# --------------------------------------------------------------------------------------------------

MAX_CLASSES = 100


def plot_confusion_matrix(confusion, class_names, out_png):
    """Row-normalised confusion matrix (rows = true class) for K <= 100 classes; returns ``out_png``.

    Class names label the axes when K <= 20; cells are annotated when K <= 10.
    """
    cm = np.asarray(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"a confusion matrix must be square K x K, got shape {cm.shape}")
    k = cm.shape[0]
    if k > MAX_CLASSES:
        raise ValueError(f"a confusion matrix of {k} classes is too large to plot (at most {MAX_CLASSES})")
    if class_names is not None and len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k} x {k} confusion matrix")
    cm = cm.astype(float)
    totals = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)
    accuracy = np.trace(cm) / cm.sum() if cm.sum() > 0 else math.nan

    size = 5 if k <= 20 else min(12, 5 + k * 0.07)
    fig = _new_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 20:
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xticklabels(names, rotation=90, fontsize=8)
        ax.set_yticklabels(names, fontsize=8)
    if k <= 10:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({k} classes, accuracy {100 * accuracy:.2f}%)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)
