"""User-facing errors: what the user can fix is a :class:`UserError` whose one sentence names the problem and
the fix; ``main.py`` prints it and exits with code 2 (``--debug``: the traceback)."""
import difflib


class UserError(Exception):
    """An error the user can fix; its message is one sentence shown without a traceback."""

    exit_code = 2


class ConfigError(UserError):
    """Invalid configuration: JSON, keys, types, ranges, names, model arguments."""


class DataError(UserError):
    """Missing, corrupt or malformed data set."""


class CheckpointError(UserError):
    """Missing, corrupt or mismatching checkpoint or weight file."""


class WriteError(UserError):
    """A file could not be written (full disk, quota, file-size limit, read-only or failing file system)."""


class ExportError(UserError):
    """The exported file does not reproduce the PyTorch model, or the exporter failed."""


class TrainingError(UserError):
    """Training cannot continue (e.g. the loss became NaN)."""


class Interrupted(BaseException):
    """The run stopped on SIGINT/SIGTERM (like KeyboardInterrupt); ``saved``: training saved its position first."""

    def __init__(self, signum, saved=False):
        super().__init__(signum)
        self.signum, self.saved = signum, saved


def check(condition, message, error=ConfigError):
    """Raise ``error(message)`` unless ``condition`` holds."""
    if not condition:
        raise error(message)


def closest(name, candidates):
    """A ' (did you mean X?)' hint for ``name`` among ``candidates``, or ''."""
    match = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
