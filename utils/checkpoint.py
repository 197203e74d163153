"""Checkpoint I/O: atomic, fsynced writes and verified reads.

A checkpoint is written to a temporary file in the same folder, flushed, fsynced and renamed over the
old one, so a crash or a full disk never leaves a half-written file and the previous checkpoint stays
intact. Reading checks that the file loads and has the keys a training checkpoint must have.
"""
import glob
import os

import torch

from utils.errors import CheckpointError

FORMAT = "cdn-template-checkpoint"
REQUIRED_KEYS = ("format", "model", "arch", "epoch", "batch", "global_step")


def atomic_write(path, write_fn):
    """Call ``write_fn(file)`` on a temp file next to ``path``, fsync it, then rename it onto ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:     # also a stop signal in the middle of the write: no temporary file left
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write {path} ({e.strerror or e}); free some disk space or point "
                                  f"exp_root at a writable folder — the previous file is intact") from e
        raise


def plain(obj):
    """EasyDict/nested containers -> plain dicts and lists (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if isinstance(obj, tuple) else [plain(v) for v in obj]
    return obj


def save_checkpoint(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, map_location="cpu"):
    """Load and verify a training checkpoint written by ``save_checkpoint``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; check the path (the experiment's "
                              f"checkpoints are in <exp_root>/<exp_name>/checkpoints/)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means a corrupt file
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt ({type(e).__name__}); use an "
                              f"earlier checkpoint or retrain") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a training checkpoint of this project; to use plain "
                              f"weights pass them to graphs.models.load_weights or --checkpoint in validate mode")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} lacks {', '.join(missing)}; it is incomplete — use an "
                              f"earlier checkpoint")
    return obj


def recovery_checkpoints(folder):
    """Recovery checkpoints in ``folder``, newest first (by global step in the name)."""
    paths = glob.glob(os.path.join(folder, "recovery-*.pth"))
    return sorted(paths, key=lambda p: int(os.path.basename(p)[9:-4]), reverse=True)
