"""The C allocator (malloc) this process runs on, and where to find tcmalloc.

A training step frees and reallocates many large activation buffers of varying sizes. glibc's heap
fragments under that (CondenseNet-86, CIFAR batch 64: peak RSS 1.78 GB), and pinning glibc's mmap
threshold (``MALLOC_MMAP_THRESHOLD_``) trades the fragmentation for a page fault on every buffer, which
more than halves the step rate. tcmalloc reuses freed pages without either cost (benchmarks/README.md has the
figures), so ``run.sh`` preloads it when the system has it (Debian/Ubuntu: ``apt install
libtcmalloc-minimal4``); ``ALLOCATOR=glibc sh run.sh ...`` opts out. An allocator can only be chosen
before the process starts (``LD_PRELOAD``), hence a launcher, not a config key.

    python utils/allocator.py        # prints the library to preload, or nothing
"""
import ctypes
import ctypes.util
import glob
import os
import sysconfig

__all__ = ["find_tcmalloc", "find_mimalloc", "find_allocator", "active_allocator", "tune_glibc"]

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
    """The library ``run.sh`` preloads: tcmalloc where the system has it, else the pip-installed mimalloc."""
    return find_tcmalloc() or find_mimalloc()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_glibc(mmap_threshold=None, trim_threshold=None, arena_max=None):
    """Set glibc malloc parameters with ``mallopt`` (no-op unless glibc is this process's malloc).

    Returns the parameters applied (a dict, empty where nothing was applied)."""
    if active_allocator() != "glibc":
        return {}
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return {}
    applied = {}
    for code, name, value in ((_M_MMAP_THRESHOLD, "mmap_threshold", mmap_threshold),
                              (_M_TRIM_THRESHOLD, "trim_threshold", trim_threshold),
                              (_M_ARENA_MAX, "arena_max", arena_max)):
        if value is not None and libc.mallopt(code, int(value)) == 1:
            applied[name] = int(value)
    return applied


def active_allocator():
    """'tcmalloc', 'jemalloc' or 'glibc': the malloc mapped into this process."""
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
