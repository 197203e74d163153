"""The C allocator (malloc) this process runs on, and where to find tcmalloc.

A training step frees and reallocates many large activation buffers; glibc's heap fragments under that
(a far higher peak RSS), and pinning its mmap threshold costs a page fault per buffer (half the step rate).
tcmalloc and mimalloc have neither cost (benchmarks/README.md). A CPU training run of ``main.py`` restarts
itself once with tcmalloc preloaded where the system has it, else the ``cmeel-mimalloc`` wheel's mimalloc;
``ALLOCATOR=glibc`` opts out. The other commands stay on glibc: OpenVINO's converter frees memory through
glibc directly, which under a preloaded malloc aborts with "free(): invalid pointer".

    python utils/allocator.py        # prints the library to preload, or nothing
"""
import ctypes
import ctypes.util
import glob
import os
import sys
import sysconfig

_TCMALLOC = ("tcmalloc_minimal", "tcmalloc")


def find_tcmalloc():
    """The tcmalloc shared library's name as the dynamic loader knows it, or None."""
    for name in _TCMALLOC:
        lib = ctypes.util.find_library(name)
        if lib:
            return lib
    return None


def find_mimalloc():
    """The path of the mimalloc shared library that the ``cmeel-mimalloc`` wheel installs, or None."""
    for root in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        hits = sorted(glob.glob(os.path.join(root, "cmeel.prefix", "lib", "libmimalloc.so*")))
        if hits:
            return hits[0]
    return None


def find_allocator():
    """The library training runs on: tcmalloc where the system has it, else the pip-installed mimalloc."""
    return find_tcmalloc() or find_mimalloc()


_REEXEC_FLAG = "CONDENSE_ALLOCATOR_REEXEC"


def reexec_with_allocator() -> None:
    """Restart this process once with :func:`find_allocator`'s library in ``LD_PRELOAD`` (a malloc is chosen
    when a process starts); not when ``LD_PRELOAD`` is set, ``ALLOCATOR=glibc``, or there is no library."""
    if os.environ.get("LD_PRELOAD") or os.environ.get("ALLOCATOR") == "glibc" or os.environ.get(_REEXEC_FLAG):
        return
    lib = find_allocator()
    if not lib:
        return
    env = dict(os.environ, LD_PRELOAD=lib, **{_REEXEC_FLAG: "1"})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)     # the same interpreter options, script and arguments


def active_allocator():
    """'tcmalloc', 'jemalloc', 'mimalloc' or 'glibc': the malloc mapped into this process."""
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            maps = f.read()
    except OSError:
        return "glibc"
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc"


if __name__ == "__main__":
    print(find_allocator() or "")
