"""Checkpoints: the file I/O (atomic writes, verified reads) and :class:`CheckpointManager`, which decides
where an experiment's checkpoints live, how they are saved, rotated and resumed.

Files in ``<exp>/checkpoints/``: ``last.pth`` (every epoch), ``best.pth`` (best validation metric),
``recovery-<step>.pth`` (every ``recovery_every`` steps, the newest ``keep`` kept). Every write is
atomic (utils.atomic_io): a crash or a full disk never leaves a half-written checkpoint and the previous
one stays intact. Reading checks that the file loads and has the keys a training checkpoint must have.
Only the main process writes; every rank reads the same file on resume.
"""
import glob
import os
from collections.abc import Mapping
from typing import Callable, Optional, Tuple

import torch

from utils.atomic_io import atomic_write
from utils.errors import CheckpointError

__all__ = ["CheckpointManager", "FORMAT", "plain", "save_checkpoint", "load_checkpoint", "recovery_checkpoints"]

FORMAT = "cdn-template-checkpoint"
REQUIRED_KEYS = ("format", "model", "arch", "epoch", "batch", "global_step")


def plain(obj):
    """Mappings (the resolved config)/nested containers -> plain dicts and lists (what
    ``torch.load(weights_only=True)`` reads)."""
    if isinstance(obj, Mapping):
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


class CheckpointManager:
    def __init__(self, folder: str, is_main: bool = True, keep_recovery: int = 2,
                 barrier: Callable[[], None] = lambda: None, logger=None):
        self.folder, self.is_main, self.keep_recovery = folder, is_main, keep_recovery
        self.barrier, self.logger = barrier, logger

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def save(self, payload: Callable[[], dict], best: bool = False) -> None:
        """``last.pth`` (and ``best.pth``); ``payload`` is called on the main process only."""
        if self.is_main:
            state = payload()
            save_checkpoint(state, self.path("last.pth"))
            if best:
                save_checkpoint(state, self.path("best.pth"))
        self.barrier()

    def save_recovery(self, payload: Callable[[], dict], step: int) -> None:
        """``recovery-<step>.pth``, keeping the newest ``keep_recovery``."""
        if self.is_main:
            save_checkpoint(payload(), self.path(f"recovery-{step}.pth"))
            for old in recovery_checkpoints(self.folder)[self.keep_recovery:]:
                os.remove(old)
        self.barrier()

    def find_resume(self) -> Optional[Tuple[dict, str]]:
        """The newest readable of ``last.pth``, the recovery checkpoints and ``best.pth``, as (state, path),
        or None. An unreadable file is skipped with a warning naming it and the file used instead; if every
        candidate is unreadable, one sentence."""
        candidates, broken = [], []
        for path in [self.path("last.pth")] + recovery_checkpoints(self.folder) + [self.path("best.pth")]:
            if os.path.exists(path):
                try:
                    candidates.append((load_checkpoint(path), path))
                except CheckpointError as e:
                    broken.append(path)
                    self._warn(f"skipping {path}: {e}")
        if candidates:
            state, path = max(candidates, key=lambda c: c[0]["global_step"])
            if broken:
                self._warn(f"{', '.join(broken)} could not be read; resuming from {path}")
            return state, path
        if broken:
            raise CheckpointError(f"every checkpoint in {self.folder} is unreadable; delete them to start over "
                                  f"or set resume to a good checkpoint")
        return None

    def find_eval(self, explicit: Optional[str] = None) -> Optional[Tuple[str, Optional[dict]]]:
        """The checkpoint a non-training mode uses, as (path, state): ``explicit`` (``--checkpoint``), else the
        experiment's ``best.pth``, else its ``last.pth``; None when there is none. ``state`` is the loaded
        training checkpoint of this project, or None for any other weight file (official, timm, plain).

        An unreadable ``best.pth`` beside a readable ``last.pth`` is skipped with a warning naming both."""
        if explicit is not None:
            if os.path.isdir(explicit):
                raise CheckpointError(f"--checkpoint {explicit} is a folder, not a file; pass a checkpoint file "
                                      f"such as {os.path.join(explicit, 'best.pth')}")
            if not os.path.isfile(explicit):
                raise CheckpointError(f"checkpoint {explicit!r} does not exist; check the path (an experiment's "
                                      f"checkpoints are in <exp_root>/<exp_name>/checkpoints/)")
            state = None if explicit.endswith(".pdparams") else load_checkpoint(explicit, foreign_ok=True)
            return explicit, state
        broken = []
        for name in ("best.pth", "last.pth"):
            path = self.path(name)
            if os.path.exists(path):
                try:
                    state = load_checkpoint(path)
                except CheckpointError as e:
                    broken.append((path, e))
                    continue
                if broken:
                    self._warn(f"{broken[0][0]} could not be read ({broken[0][1]}); using {path}")
                return path, state
        if broken:
            raise broken[0][1]
        return None

    def eval_path(self, explicit: Optional[str] = None) -> str:
        """The path :meth:`find_eval` picks; one sentence when there is none."""
        found = self.find_eval(explicit)
        if found is None:
            raise CheckpointError(f"no checkpoint given and none found in {self.folder}; train first or pass "
                                  f"--checkpoint PATH")
        return found[0]

    @staticmethod
    def check_compatible(state: dict, path: str, arch: str, model_args: dict, converted: bool,
                         num_classes: int) -> None:
        """One sentence if the checkpoint holds another model than the config builds."""
        if state["arch"] != arch or dict(state.get("model_args", {})) != dict(model_args):
            raise CheckpointError(f"{path} holds model {state['arch']!r} with model_args {state.get('model_args')} "
                                  f"but the config builds {arch!r} with {dict(model_args)}; set model and "
                                  f"model_args to match the checkpoint")
        if bool(state.get("converted")) != converted:
            raise CheckpointError(f"{path} holds a {'converted' if state.get('converted') else 'training-time'} "
                                  f"model but the config builds a {'converted' if converted else 'training-time'} "
                                  f"one; set converted to {str(bool(state.get('converted'))).lower()}")
        if state.get("num_classes") != num_classes:
            raise CheckpointError(f"{path} was trained for {state.get('num_classes')} classes but the model has "
                                  f"{num_classes}; to fine-tune on a new class count, start from these "
                                  f"weights with a fresh classifier instead of resuming")

    def _warn(self, message: str) -> None:
        if self.logger is not None:
            self.logger.warning(message)

