"""The C allocator (malloc) this process runs on, and where to find tcmalloc.

A training step frees and reallocates many large activation buffers of varying sizes. glibc's heap
fragments under that (a far higher peak RSS), and pinning glibc's mmap
threshold (``MALLOC_MMAP_THRESHOLD_``) trades the fragmentation for a page fault on every buffer, which
more than halves the step rate. tcmalloc and mimalloc reuse freed pages without either cost
(benchmarks/README.md has the figures). A training run of ``python main.py`` (and so of ``run.sh``)
restarts itself once with tcmalloc preloaded where the system has it, else the mimalloc that ``pip install
-r requirements.txt`` brings (the ``cmeel-mimalloc`` wheel); ``ALLOCATOR=glibc`` opts out. An allocator
can only be chosen before the process starts (``LD_PRELOAD``), hence the restart, not a config key. The
other commands stay on glibc: OpenVINO's model converter frees memory through glibc directly, which
under a preloaded malloc aborts with "free(): invalid pointer".

    python utils/allocator.py        # prints the library to preload, or nothing
"""
import ctypes
import ctypes.util
import glob
import os
import sys
import sysconfig

__all__ = ["find_tcmalloc", "find_mimalloc", "find_allocator", "active_allocator", "reexec_with_allocator"]

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
    """Restart this Python process once with :func:`find_allocator`'s library preloaded.

    A malloc can only be chosen when a process starts, so a training run of ``main.py`` re-executes
    itself (same interpreter, options and arguments) with ``LD_PRELOAD`` set. Nothing happens when
    ``LD_PRELOAD`` is already set, ``ALLOCATOR=glibc`` opts out, no library is found, or this process
    is already the restarted one.
    """
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
