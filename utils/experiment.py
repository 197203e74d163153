"""The experiment folder (``<exp_root>/<exp_name>/``)."""
import fcntl
import json
import os
import shutil
import socket

from easydict import EasyDict

from utils.atomic_io import atomic_write, remove_stale_temporaries, temporary_path
from utils.errors import ConfigError

SUBDIRS = ("checkpoints", "summaries", "logs", "out")


def experiment_dirs(config):
    root = os.path.join(config.exp_root, config.exp_name)
    return EasyDict({"root": root, **{d: os.path.join(root, d) for d in SUBDIRS},
                     "metrics": os.path.join(root, "metrics.csv"), "config": os.path.join(root, "config.json")})


LOCK_FILE = "train.lock"


class ExperimentFolder:
    """``<exp_root>/<exp_name>/`` for one run: :meth:`prepare` creates it, and a training run locks it (a
    ``flock`` on ``train.lock``, released by the kernel even on a crash); after a failed run :meth:`close`
    removes what this run created unless a checkpoint was written."""

    def __init__(self, config):
        self.dirs = experiment_dirs(config)
        self.created = None     # the topmost folder this run created, when it created the experiment folder
        self._lock = None

    def prepare(self, is_main: bool = True, lock: bool = False) -> EasyDict:
        """Create the folders (``lock``: locked first); one sentence if unwritable or another run holds it."""
        dirs = self.dirs
        if is_main:
            try:
                self.created = _make_folder(dirs.root)
                if lock:
                    self._lock = _lock(dirs.root)
                    if self._lock is None:
                        raise _in_use(dirs.root)
                    self._lock.seek(0)
                    self._lock.truncate()
                    self._lock.write(f"{os.getpid()} {socket.gethostname()}\n")
                    self._lock.flush()
                for d in SUBDIRS:
                    os.makedirs(dirs[d], exist_ok=True)
                probe = temporary_path(os.path.join(dirs.root, "write-test"))
                with open(probe, "w"):
                    pass
                os.remove(probe)
            except OSError as e:
                raise ConfigError(f"cannot write the experiment folder {dirs.root!r} ({e.strerror or e}); "
                                  f"set exp_root to a writable folder") from e
            remove_stale_temporaries(dirs.root)     # every mode starts here: a killed run's leftovers go
        return dirs

    def save_config(self, config) -> None:
        """``config.json``: the run's resolved ``config``, written when training starts."""
        atomic_write(self.dirs.config, json.dumps(dict(config), indent=2, sort_keys=True))

    def close(self, failed: bool) -> None:
        """Release the lock; after a failed run remove what it created, unless it holds a checkpoint (or a lock)."""
        try:
            checkpoints = self.dirs.checkpoints
            if failed and self.created and not (os.path.isdir(checkpoints) and
                                                any(n.endswith(".pth") for n in os.listdir(checkpoints))):
                if self._lock is None:
                    self._lock = _lock(self.dirs.root) if os.path.isdir(self.dirs.root) else None
                    if self._lock is None:
                        return
                root = os.path.abspath(self.dirs.root)
                shutil.rmtree(root, ignore_errors=True)
                parent, top = os.path.dirname(root), self.created
                while os.path.commonpath([parent, top]) == top:     # the parents this run created, if empty
                    try:
                        os.rmdir(parent)
                    except OSError:
                        break
                    parent = os.path.dirname(parent)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None


def _in_use(root: str) -> ConfigError:
    """The sentence for a second training run on a locked experiment folder, naming the holder."""
    try:
        with open(os.path.join(root, LOCK_FILE)) as f:
            pid, host = f.read().split()
        holder = f"process {int(pid)} on {host}"
    except (OSError, ValueError):   # the holder has locked but not yet written its PID
        holder = "another process"
    return ConfigError(f"the experiment {root} is being trained by {holder}, and an experiment takes one "
                       f"training run at a time; wait for it to finish (or stop it), or set another exp_name")


def check_unlocked(root: str) -> None:
    """One sentence if a training run holds experiment folder ``root`` (the ``--nproc`` launcher's check)."""
    if os.path.exists(os.path.join(root, LOCK_FILE)):
        f = _lock(root)
        if f is None:
            raise _in_use(root)
        f.close()


def _lock(root: str):
    """``root/train.lock`` open and exclusively locked, or None when another process holds it."""
    f = open(os.path.join(root, LOCK_FILE), "a+")     # not truncated: the holder's PID stays readable
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    return f


def _make_folder(root: str):
    """Create ``root`` and its parents; the topmost folder created, or None if ``root`` existed (``mkdir``
    decides, so of two runs starting together only one owns a new folder)."""
    root = top = os.path.abspath(root)
    while not os.path.isdir(os.path.dirname(top)):
        top = os.path.dirname(top)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    try:
        os.mkdir(root)
    except FileExistsError:
        return None
    return top
