"""Every file the project writes goes through here: nothing half-written, even on a full disk.

A file is written under a temporary name in its own folder, ``.<stem>.tmp-<host>-<pid>-<token><ext>``,
fsynced, renamed onto its name and the folder fsynced: a reader sees the old file or the new one, never
a part of one. Temporaries are created like any file (mode 0666 minus the umask). On any OSError (full
disk, quota, file-size limit, read-only or failing file system) the temporaries are removed, the
previous file stays as it was, and :class:`~utils.errors.WriteError` says so in one sentence with the
file, the OS's reason and the fix.

Three forms: :func:`atomic_write` (bytes, text or a function that writes to the open file),
:func:`atomic_path` for libraries that only write to a path (``torch.onnx.export``, PIL), and
:func:`atomic_paths` for a set of files that belong together (an OpenVINO ``.xml`` + ``.bin``).
A temporary left by a killed process is removed by :func:`remove_stale_temporaries` when the next
command starts; one whose process (same host, PID in the name) still runs is left alone.
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

__all__ = ["atomic_write", "atomic_path", "atomic_paths", "temporary_folder", "temporary_path",
           "remove_stale_temporaries", "check_writable", "write_error"]

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
    """Yield one temporary path per file of ``paths`` (same folder, same token); when the block ends,
    fsync them and rename each onto its file.

    With several files the first is the one a reader opens (the ``.xml`` of an IR): the old one is
    removed before and the new one renamed after the others, so no reader (and no crash) pairs an old
    first file with new companions. On an error every temporary is removed; an OSError becomes a
    WriteError. ``setting`` names the option that moves the folder (``exp_root``, ``TORCH_HOME``)."""
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
    """Write ``data`` (bytes, UTF-8 text, or ``data(file)`` writing to the open binary file) to
    ``path`` atomically; returns the path."""
    with atomic_path(path, what, setting, make_folder) as tmp:
        with open(tmp, "xb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
    return os.fspath(path)


@contextlib.contextmanager
def temporary_folder(parent: str, name: str) -> Iterator[str]:
    """A scratch folder in ``parent`` named like a temporary (so a killed run's is cleaned up too),
    removed with its content when the block ends."""
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
    """Remove the temporaries (files and scratch folders) under ``root`` whose process is gone; returns
    their paths. A temporary of a running process (this host, its PID alive) is kept: a validate may
    run beside a training run. This process's own PID counts as gone: it has not written yet, so such
    a file is an earlier process's that had the same PID (containers reuse PIDs)."""
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
    """The OSError behind a failed write, or None when ``exc`` is no write failure.

    Some libraries report a failed write without the OS's reason (OpenVINO's serializer raises
    'iostream error', torch's zip writer 'unexpected pos'); appending to their temporary file then
    reproduces the reason (a full disk, a file at the size limit) or shows that the disk is fine."""
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
