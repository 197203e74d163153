"""Checkpoint I/O: atomic writes (utils.atomic_io) and verified reads.

A crash or a full disk never leaves a half-written checkpoint and the previous one stays intact.
Reading checks that the file loads and has the keys a training checkpoint must have.
"""
import glob
import os

import torch

from utils.atomic_io import atomic_write
from utils.errors import CheckpointError

FORMAT = "cdn-template-checkpoint"
REQUIRED_KEYS = ("format", "model", "arch", "epoch", "batch", "global_step")


def plain(obj):
    """EasyDict/nested containers -> plain dicts and lists (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if isinstance(obj, tuple) else [plain(v) for v in obj]
    return obj


def save_checkpoint(obj, path) -> str:
    return atomic_write(path, lambda f: torch.save(obj, f), "checkpoint")


def load_checkpoint(path, map_location="cpu", foreign_ok=False):
    """Load and verify a training checkpoint written by ``save_checkpoint``.

    ``foreign_ok``: a readable file that is not this project's checkpoint (official, timm or plain
    weights) returns None instead of raising; a truncated or corrupt file raises either way."""
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
        if foreign_ok:
            return None
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
