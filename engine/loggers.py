"""What a run writes about itself: the console and log-file logging of every mode (:func:`setup_logging`),
and for training TensorBoard scalars, ``metrics.csv`` and a console line per epoch (:class:`RunLogger`)."""
import csv
import io
import logging
import os
import socket
import sys
import time
from typing import Sequence

from utils.atomic_io import atomic_write, write_error

__all__ = ["RunLogger", "METRIC_FIELDS", "format_rate", "setup_logging", "close_logging"]

METRIC_FIELDS = ("epoch", "lr", "train_loss", "train_top1", "train_top5", "val_loss", "val_top1", "val_top5",
                 "ema_val_loss", "ema_val_top1", "ema_val_top5", "epoch_time_s", "train_images_per_s")


class _LogFile(logging.FileHandler):
    """The mode's log file, appended line by line: a failed append (a full disk) stops the command with
    one sentence instead of logging's printed traceback; the lines written before stay."""

    def handleError(self, record):
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            raise write_error(self.baseFilename, err, "the lines written before are kept") from err
        super().handleError(record)


class _TqdmHandler(logging.StreamHandler):
    """Console handler that does not break tqdm progress bars."""

    def emit(self, record):
        from tqdm import tqdm
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(log_file=None, is_main=True):
    """Console (tqdm-safe) and file handlers on the root logger; the ``cdn`` logger speaks at INFO on
    rank 0, the libraries' loggers (e.g. ``datasets``) at WARNING."""
    close_logging()
    root = logging.getLogger()
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if log_file and is_main:
        fh = _LogFile(log_file, delay=True)      # no empty file from a run that logs nothing
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(fh)
    for h in handlers:
        h._cdn = True
        root.addHandler(h)
    root.setLevel(logging.WARNING)
    logger = logging.getLogger("cdn")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    return logger


def close_logging() -> None:
    """Remove and close the handlers :func:`setup_logging` added. A run ends with it: a failed first run
    removes its experiment folder, log file included, and a later line of the same process must not go there."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_cdn", False)]:
        root.removeHandler(h)
        h.close()


class EventFile:
    """A TensorBoard event file, appended in the calling thread and fsynced by :meth:`flush`.

    tensorboardX's SummaryWriter appends from a background thread: a full disk kills that thread (a
    traceback on stderr) and the next ``add_scalar`` then blocks forever on its full queue. Here a
    failed append stops the run with one sentence instead. The file is an append-only log of
    length- and CRC-framed records, so "atomic" means: every record before the failure stays, and a
    record cut short at the end is skipped by TensorBoard's reader."""

    def __init__(self, folder: str):
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.record_writer import RecordWriter
        self._event, self._failed = Event, False
        self.path = os.path.join(folder, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                                         f"{os.getpid()}")
        self._guard(lambda: os.makedirs(folder, exist_ok=True))
        self._file = self._guard(lambda: RecordWriter(self.path))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar
        self._write(self._event(wall_time=time.time(), step=int(step), summary=scalar(tag, value)))

    def text(self, tag: str, text: str) -> None:
        from tensorboardX.summary import text as text_summary
        self._write(self._event(wall_time=time.time(), summary=text_summary(tag, text)))

    def flush(self) -> None:
        self._guard(self._file.flush)

    def close(self) -> None:
        """Flush and close; after a failed write only close (the first error was reported)."""
        if not self._failed:
            self.flush()
        try:
            self._file.close()
        except OSError:
            pass

    def _write(self, event) -> None:
        self._guard(lambda: self._file.write(event.SerializeToString()))

    def _guard(self, fn):
        try:
            return fn()
        except OSError as e:
            self._failed = True
            raise write_error(self.path, e, "the events written before are kept") from e


def format_rate(images_per_s: float) -> str:
    """Images per second with three significant digits, without an exponent: a CPU detector's 0.0712
    would round to a misleading "0", a GPU classifier's 2345.6 reads "2346"."""
    return f"{images_per_s:.0f}" if images_per_s >= 100 else f"{images_per_s:.3g}"


class RunLogger:
    """TensorBoard (tensorboardX) + metrics.csv + the logger's epoch line; silent on non-main ranks."""

    def __init__(self, summaries: str, metrics_csv: str, logger, max_epoch: int, is_main: bool = True,
                 fields: Sequence[str] = METRIC_FIELDS):
        self.metrics_csv, self.logger, self.max_epoch, self.is_main = metrics_csv, logger, max_epoch, is_main
        self.summaries, self.fields = summaries, tuple(fields)
        self._writer = None

    @property
    def writer(self):
        """The TensorBoard event file (main process), created on the first scalar: a run that fails before
        training leaves no empty event file."""
        if self._writer is None and self.is_main:
            self._writer = EventFile(self.summaries)
        return self._writer

    def step(self, step: int, scalars: dict) -> None:
        """Per-iteration scalars (``train/loss``, ``train/lr``, ...)."""
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.scalar(key, value, step)

    def epoch(self, row: dict) -> None:
        """One epoch's metrics: TensorBoard (``train/loss`` ...), a rewritten metrics.csv, a console line."""
        if not self.is_main:
            return
        epoch = row["epoch"]
        for key, value in row.items():
            if key != "epoch" and value is not None:
                self.writer.scalar(key.replace("_", "/", 1), value, epoch)
        self.writer.flush()
        self._write_csv(row)
        parts = [f"epoch {epoch}/{self.max_epoch}", f"lr {row['lr']:.5f}"]
        for prefix, label in (("train_", "train"), ("val_", "val"), ("ema_val_", "EMA val")):
            values = [f"{k[len(prefix):]} {v:.4g}" for k, v in row.items() if k.startswith(prefix)
                      and k != "train_images_per_s" and v is not None]
            if values:
                parts.append(f"{label} " + " ".join(values))
        parts.append(f"{format_rate(row['train_images_per_s'])} img/s, {row['epoch_time_s']:.1f}s")
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
        atomic_write(self.metrics_csv, buf.getvalue())

    def text(self, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.text(tag, text)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

