"""``--mode validate``: top-1/top-5 of a checkpoint on the validation split, per class and as a confusion matrix."""
import csv
import io
from typing import List

import torch

from engine.evaluator import evaluate
from utils.atomic_io import atomic_write

from .common import load_for_eval, out_path, runtime_model


def validate(ctx) -> dict:
    """Evaluate the checkpoint (or, with ``runtime``, the deployed file) with the model's own eval
    transform; write ``out/per_class_accuracy.csv`` and, for at most 100 classes, ``out/confusion_matrix.png``."""
    deployed = runtime_model(ctx)
    path = load_for_eval(ctx) if deployed is None else ctx.config.runtime
    _, loader = ctx.loaders
    model = deployed if deployed is not None else ctx.model
    stats = evaluate(model, loader, ctx.device, ctx.dist, ctx.num_classes, amp=ctx.config.amp, confusion=True,
                     forward=deployed)
    ctx.logger.info(f"{path}: top-1 {stats['top1']:.2f}%  top-5 {stats['top5']:.2f}%  "
                    f"loss {stats['loss']:.4f}  ({stats['count']} images)")
    if ctx.dist.is_main:
        write_per_class(ctx, stats["confusion"], ctx.class_names())
    return stats


def write_per_class(ctx, confusion: torch.Tensor, names: List[str]) -> None:
    """Per-class accuracy as CSV, and the confusion matrix as PNG for at most 100 classes."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["class_index", "class_name", "correct", "total", "accuracy"])
    for i, name in enumerate(names):
        total, correct = int(confusion[i].sum()), int(confusion[i, i])
        writer.writerow([i, name, correct, total, f"{100.0 * correct / total:.2f}" if total else ""])
    out = out_path(ctx, "per_class_accuracy.csv")
    atomic_write(out, buf.getvalue())
    ctx.logger.info(f"wrote {out}")
    if len(names) <= 100:
        from .plots import plot_confusion_matrix
        png = plot_confusion_matrix(confusion.numpy(), names, out_path(ctx, "confusion_matrix.png"))
        ctx.logger.info(f"wrote {png}")
