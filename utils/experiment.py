"""The experiment folder (``<exp_root>/<exp_name>/``), logging, seeding and device selection."""
import json
import logging
import os
import random
import sys

import numpy as np
import torch
from easydict import EasyDict

from utils.atomic_io import atomic_write, remove_stale_temporaries, temporary_path, write_error
from utils.errors import ConfigError

SUBDIRS = ("checkpoints", "summaries", "logs", "out")


def experiment_dirs(config):
    root = os.path.join(config.exp_root, config.exp_name)
    return EasyDict({"root": root, **{d: os.path.join(root, d) for d in SUBDIRS},
                     "metrics": os.path.join(root, "metrics.csv"), "config": os.path.join(root, "config.json")})


def prepare_experiment(config, is_main=True, save_config=True):
    """Create the experiment folders, remove the temporary files of killed runs (every mode starts
    here) and save the resolved config; one sentence if the folder is not writable."""
    dirs = experiment_dirs(config)
    if is_main:
        try:
            for d in SUBDIRS:
                os.makedirs(dirs[d], exist_ok=True)
            probe = temporary_path(os.path.join(dirs.root, "write-test"))
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise ConfigError(f"cannot write the experiment folder {dirs.root!r} ({e.strerror or e}); "
                              f"set exp_root to a writable folder") from e
        remove_stale_temporaries(dirs.root)
        if save_config:
            atomic_write(dirs.config, json.dumps(config, indent=2, sort_keys=True))
    return dirs


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
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "_cdn", False)]:
        root.removeHandler(h)
        h.close()
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers = [console]
    if log_file and is_main:
        fh = _LogFile(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers.append(fh)
    for h in handlers:
        h._cdn = True
        root.addHandler(h)
    root.setLevel(logging.WARNING)
    logger = logging.getLogger("cdn")
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    return logger


def seed_everything(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def resolve_device(name, local_rank=0, distributed=False):
    """The torch device for ``name`` ('auto' | 'cpu' | 'cuda' | 'cuda:N'); under DDP every process takes
    the GPU of its LOCAL_RANK (a 'cuda:N' would put every rank on one GPU)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available; use 'cpu' or 'auto'")
        if name == "cuda" or distributed:
            name = f"cuda:{local_rank}"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)
