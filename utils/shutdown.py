"""Prompt, safe shutdown on SIGTERM / SIGINT (a cluster's preemption notice, Ctrl-C), for every mode.

``main.py`` installs one handler for the whole run (:func:`handle_signals`). While the process holds
nothing unsaved (start-up, data loading before the first training step, validate / predict / export), a
signal raises :class:`utils.errors.Interrupted` at once, wherever the process is: files are written
atomically, so nothing is left half-written. From the first training step on, the trainer defers signals
(:func:`defer`): a signal only records the request, which the training loop and the evaluators read every
batch (:func:`should_stop`, :func:`check`: a vote of the ranks under DDP), so the trainer saves its
position and stops within one batch. A second signal stops at once; one arriving within ``REPEAT_S`` of
the first is the same request delivered twice (by the cluster and again by torchrun) and counts once.

Python drops an exception raised where it cannot propagate (a fork's callbacks, say, while data-loader
workers start; no message is printed for it), so the recorded request is also honoured at those checks,
and on entering deferral.
Data-loader workers survive a signal sent to the whole process group; the main process stops them.
"""
import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from utils.errors import Interrupted

__all__ = ["STOP_SIGNALS", "StopRequested", "handle_signals", "defer", "honour", "stop_deferring", "requested",
           "should_stop", "check", "worker_init"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_S = 1.0


class StopRequested(Interrupted):
    """Raised by :func:`check` once the ranks agreed to stop; inside training the trainer saves first."""


class _State:
    pid: Optional[int] = None       # the process that installed the handler
    signum: Optional[int] = None    # the first stop signal received
    since: float = 0.0              # when it arrived (time.monotonic)
    deferring: bool = False         # unsaved training progress is in memory


_state = _State()


def _on_signal(signum, frame):
    if os.getpid() != _state.pid:   # a forked child (data-loader worker): its parent decides
        return
    now = time.monotonic()
    if _state.signum is None:
        _state.signum, _state.since = signum, now
        if not _state.deferring:    # nothing unsaved: stop here and now
            raise Interrupted(signum)
        logging.getLogger("cdn").warning(f"received {signal.Signals(signum).name}: stopping after this batch "
                                         f"(the training position is saved first)")
    elif now - _state.since >= REPEAT_S:
        raise Interrupted(signum)   # asked again: stop now (an interrupted write leaves the old file intact)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the stop handler for SIGINT and SIGTERM for the duration (the previous handlers after)."""
    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    unraisable = sys.unraisablehook
    _state.pid, _state.signum, _state.deferring = os.getpid(), None, False
    sys.unraisablehook = lambda u: None if isinstance(u.exc_value, Interrupted) else unraisable(u)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = unraisable
        _state.pid, _state.signum, _state.deferring = None, None, False


def defer() -> None:
    """From now on a signal only records the request: the caller holds unsaved progress and stops at its
    next safe point. A request that came before (and could not stop the process) stops it here, where
    nothing is unsaved yet."""
    if not _state.deferring and _state.signum is not None:
        raise Interrupted(_state.signum)
    _state.deferring = True


def honour() -> None:
    """Stop now if a signal came and was swallowed (a library that turns the exception raised in its
    callback into its own error, as torch's ONNX tracer does); a no-op otherwise, and while deferring."""
    if _state.signum is not None and not _state.deferring:
        raise Interrupted(_state.signum)


def stop_deferring() -> None:
    """Signals stop the process at once again (nothing unsaved is left in memory)."""
    _state.deferring = False


def requested() -> Optional[int]:
    """The stop signal received so far, or None."""
    return _state.signum


def should_stop(dist, device) -> bool:
    """True on every rank once a stop was requested on any: one all-reduce under DDP, so every rank must
    ask equally often."""
    return dist.any(_state.signum is not None, device)


def check(dist, device) -> None:
    """Raise :class:`StopRequested` on every rank once a stop was requested on any (see :func:`should_stop`)."""
    if should_stop(dist, device):
        raise StopRequested(_state.signum or signal.SIGTERM)


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the data loaders: a signal sent to the whole process group or job step
    (Ctrl-C, Slurm) must not kill a worker under a main process that is saving; the main process shuts
    its workers down. A worker ignores SIGINT, and SIGTERM unless its parent sends it (as the loader's
    shutdown does, when a worker does not stop by itself)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})     # threads started later inherit the mask
    parent = os.getppid()

    def wait_for_parent():
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)

    threading.Thread(target=wait_for_parent, daemon=True).start()
