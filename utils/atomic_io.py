"""Every file the project writes goes through here: nothing half-written, even on a full disk.

A file is written under a temporary name in its folder (``.<stem>.tmp-<host>-<pid>-<token><ext>``), fsynced
and renamed onto its name, so a reader sees the old file or the new one. On an OSError the temporaries go,
the previous file stays, and a :class:`~utils.errors.WriteError` names the file, the OS's reason and the fix.
:func:`atomic_path` / :func:`atomic_paths` serve libraries that only write to a path (ONNX, an OpenVINO
``.xml`` + ``.bin``); :func:`remove_stale_temporaries` removes a killed process's temporaries.
"""
import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
from typing import Callable, Iterator, List, Optional, Union

from utils.errors import ConfigError, UserError, WriteError

_HOST = re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname().split(".")[0]) or "host"
_TEMPORARY = re.compile(r"\..+\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.[^.]*)?")
_FIX = {errno.ENOSPC: "free some disk space", errno.EDQUOT: "free some of your disk quota",
        errno.EFBIG: "raise the file-size limit (ulimit -f)"}


def temporary_path(path: str, pid: Optional[int] = None, token: Optional[str] = None) -> str:
    """The temporary name of ``path`` for process ``pid`` (default: this one); the extension is kept,
    because some libraries derive companion files from it (OpenVINO's ``.bin`` from the ``.xml``)."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    stem, ext = os.path.splitext(name)
    return os.path.join(folder, f".{stem}.tmp-{_HOST}-{pid or os.getpid()}-{token or secrets.token_hex(4)}{ext}")


def check_writable(path, what: str = "output") -> str:
    """Raise ConfigError (one sentence) unless ``path`` can be created in an existing, writable folder."""
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        raise ConfigError(f"{what} path {path!r} is a folder or empty; give a file name such as model.onnx")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"cannot write {what} {path!r}: folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path!r}: folder {folder!r} is not writable; "
                          f"choose another location")
    return path


def write_error(path: str, err: OSError, kept: str, setting: str = "exp_root") -> WriteError:
    """The one sentence for a failed write of ``path``: the OS's reason, the fix, and what ``kept``."""
    fix = _FIX.get(err.errno)
    where = f"set {setting} to a writable folder" + (" on another disk" if fix else "")
    return WriteError(f"could not write {path} ({err.strerror or err}); {fix + ' or ' if fix else ''}{where}, "
                      f"then run the same command again — {kept}")


@contextlib.contextmanager
def atomic_paths(*paths, what: str = "output", setting: str = "exp_root",
                 make_folder: bool = False) -> Iterator[List[str]]:
    """Yield one temporary path per file of ``paths``; when the block ends, fsync and rename each onto its
    file. The first file is the one a reader opens (an IR's ``.xml``): its old version goes first and its new
    one comes last, so nothing pairs an old first file with new companions. ``setting``: what moves the folder."""
    paths = [os.fspath(p) for p in paths]
    if make_folder:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
        except OSError as e:
            raise write_error(paths[0], e, "nothing was written", setting) from e
    paths = [check_writable(p, what) for p in paths]
    token = secrets.token_hex(4)
    tmps = [temporary_path(p, token=token) for p in paths]
    touched = False
    try:
        yield tmps
        for tmp in tmps:
            _fsync(tmp)
        if len(paths) > 1 and os.path.exists(paths[0]):
            os.remove(paths[0])
            touched = True
        for path, tmp in list(zip(paths, tmps))[1:] + [(paths[0], tmps[0])]:
            os.replace(tmp, path)
            touched = True
        for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
            _fsync_folder(folder)
    except BaseException as exc:
        err = _os_error(exc, tmps)
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        if err is None:
            raise
        path = err.filename if isinstance(err.filename, str) and err.filename not in tmps else paths[0]
        kept = ("it may be incomplete; write it again" if touched else
                "the previous file is intact" if os.path.exists(paths[0]) else "nothing was written")
        raise write_error(path, err, kept, setting) from exc


@contextlib.contextmanager
def atomic_path(path, what: str = "output", setting: str = "exp_root", make_folder: bool = False) -> Iterator[str]:
    """:func:`atomic_paths` for one file: yields its temporary path."""
    with atomic_paths(path, what=what, setting=setting, make_folder=make_folder) as (tmp,):
        yield tmp


def atomic_write(path, data: Union[bytes, str, Callable], what: str = "file", setting: str = "exp_root",
                 make_folder: bool = False) -> str:
    """Write ``data`` (bytes, UTF-8 text, or ``data(binary file)`` writing it) to ``path``; returns the path."""
    with atomic_path(path, what, setting, make_folder) as tmp:
        with open(tmp, "xb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
    return os.fspath(path)


@contextlib.contextmanager
def temporary_folder(parent: str, name: str) -> Iterator[str]:
    """A scratch folder in ``parent`` named like a temporary (a killed run's is cleaned up), removed after."""
    folder = temporary_path(os.path.join(parent, name))
    try:
        os.mkdir(folder)
    except OSError as e:
        raise write_error(folder, e, "nothing was written") from e
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temporaries(root: str) -> List[str]:
    """Remove (and return) the temporaries under ``root`` whose process is gone; a running one's (a validate
    beside a training run) stay. Our own PID counts as gone: containers reuse PIDs, and we wrote nothing yet."""
    removed = []
    for folder, dirs, files in os.walk(root):
        for name in files + dirs:
            m = _TEMPORARY.fullmatch(name)
            if m is None or m["host"] != _HOST or _alive(int(m["pid"])):
                continue
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):     # gone already, or not ours to remove
                if name in dirs:
                    shutil.rmtree(path)
                else:
                    os.remove(path)
                removed.append(path)
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in removed]
    return removed


# ------------------------------------------------------------------------------------ helpers
def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # another user's live process
        return True
    return True


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    try:
        _fsync(folder)
    except OSError as e:
        if e.errno != errno.EINVAL:     # some file systems cannot fsync a folder
            raise


def _os_error(exc: BaseException, tmps: List[str]) -> Optional[OSError]:
    """The OSError behind a failed write, or None. Some libraries hide the OS's reason (OpenVINO's 'iostream
    error', torch's 'unexpected pos'): appending to their temporary reproduces it, or shows the disk is fine."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, UserError) or not isinstance(exc, Exception):
        return None
    for tmp in tmps:
        try:
            with open(tmp, "ab") as f:
                f.write(bytes(1 << 16))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            return e
    return None
