"""What a training run writes about itself: TensorBoard scalars, ``metrics.csv`` and a console line."""
import csv
import io
import os
from typing import Sequence

from utils.checkpoint import atomic_write

__all__ = ["RunLogger", "METRIC_FIELDS"]

METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "ema_val_loss", "ema_val_top1", "ema_val_top5", "epoch_time_s", "train_images_per_s")


class RunLogger:
    """TensorBoard (tensorboardX) + metrics.csv + the logger's epoch line; silent on non-main ranks."""

    def __init__(self, summaries: str, metrics_csv: str, logger, max_epoch: int, is_main: bool = True,
                 fields: Sequence[str] = METRIC_FIELDS):
        self.metrics_csv, self.logger, self.max_epoch, self.is_main = metrics_csv, logger, max_epoch, is_main
        self.summaries, self.fields = summaries, tuple(fields)
        self._writer = None

    @property
    def writer(self):
        """The TensorBoard writer (main process), created on the first scalar: a run that fails before
        training leaves no empty event file."""
        if self._writer is None and self.is_main:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(self.summaries)
        return self._writer

    def step(self, step: int, scalars: dict) -> None:
        """Per-iteration scalars (``train/loss``, ``train/lr``, ...)."""
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(key, value, step)

    def epoch(self, row: dict) -> None:
        """One epoch's metrics: TensorBoard (``train/loss`` ...), a rewritten metrics.csv, a console line."""
        if not self.is_main:
            return
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and value is not None:
                self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.flush()
        self._write_csv(row)
        parts = [f"epoch {epoch}/{self.max_epoch}", f"lr {row['lr']:.5f}"]
        for prefix, label in (("train_", "train"), ("val_", "val"), ("ema_val_", "EMA val")):
            values = [f"{k[len(prefix):]} {v:.4g}" for k, v in row.items() if k.startswith(prefix)
                      and k != "train_images_per_s" and v is not None]
            if values:
                parts.append(f"{label} " + " ".join(values))
        parts.append(f"{row['train_images_per_s']:.0f} img/s, {row['epoch_time_s']:.1f}s")
        self.logger.info(" | ".join(parts))

    def _write_csv(self, row: dict) -> None:
        """Rewrite metrics.csv atomically: rows of earlier epochs (kept on resume) plus this one."""
        rows = []
        if os.path.exists(self.metrics_csv):
            with open(self.metrics_csv, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("epoch", "").isdigit() and int(r["epoch"]) < row["epoch"]]
        rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.metrics_csv, lambda f: f.write(buf.getvalue().encode()))

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

