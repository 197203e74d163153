"""Helpers for tests that watch real processes: wait for a condition, find a process's children."""
import os
import time
from typing import Callable, List


def wait_for(predicate: Callable[[], object], timeout: float = 120) -> bool:
    """Poll ``predicate`` every 50 ms; whether it came true within ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def children(pid: int) -> List[int]:
    """The process ids whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    kids.append(int(entry))
            except (OSError, IndexError):
                pass
    return kids
