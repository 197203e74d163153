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
import ctypes.util
import os

__all__ = ["find_tcmalloc", "active_allocator"]

_TCMALLOC = ("tcmalloc_minimal", "tcmalloc")


def find_tcmalloc():
    """The tcmalloc shared library's name as the dynamic loader knows it, or None."""
    for name in _TCMALLOC:
        lib = ctypes.util.find_library(name)
        if lib:
            return lib
    return None


def active_allocator():
    """'tcmalloc', 'jemalloc' or 'glibc': the malloc mapped into this process."""
    try:
        with open(f"/proc/{os.getpid()}/maps") as f:
            maps = f.read()
    except OSError:
        return "glibc"
    for name in ("tcmalloc", "jemalloc"):
        if f"lib{name}" in maps:
            return name
    return "glibc"


if __name__ == "__main__":
    print(find_tcmalloc() or "")
