"""Prompt, safe shutdown on SIGTERM / SIGINT (a cluster's preemption notice, Ctrl-C), for every mode.

``main.py`` installs one handler for the run (:func:`handle_signals`). While nothing is unsaved a signal
raises :class:`utils.errors.Interrupted` at once (files are written atomically). From the first training
step on the trainer defers signals (:func:`defer`): a signal only records the request, which the loop reads
every batch (:func:`should_stop`, :func:`check`: a vote of the ranks), so it saves and stops within one batch.
A second signal stops at once; one within ``REPEAT_S`` of the first is the same request delivered twice (by
the cluster and by torchrun). Python drops an exception it cannot propagate (a fork's callbacks), so the
recorded request is also honoured at those checks. Data-loader workers ignore the signal; their parent stops them.
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
    """From now on a signal only records the request (the caller stops at its next safe point); one that came
    before, and could not stop the process, stops it here, where nothing is unsaved yet."""
    if not _state.deferring and _state.signum is not None:
        raise Interrupted(_state.signum)
    _state.deferring = True


def honour() -> None:
    """Stop now if a signal came and a library swallowed it (torch's ONNX tracer); a no-op while deferring."""
    if _state.signum is not None and not _state.deferring:
        raise Interrupted(_state.signum)


def stop_deferring() -> None:
    """Signals stop the process at once again (nothing unsaved is left in memory)."""
    _state.deferring = False


def requested() -> Optional[int]:
    """The stop signal received so far, or None."""
    return _state.signum


def should_stop(dist, device) -> bool:
    """True on every rank once any requested a stop (an all-reduce: every rank asks equally often)."""
    return dist.any(_state.signum is not None, device)


def check(dist, device) -> None:
    """Raise :class:`StopRequested` on every rank once a stop was requested on any (see :func:`should_stop`)."""
    if should_stop(dist, device):
        raise StopRequested(_state.signum or signal.SIGTERM)


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` of the data loaders: a signal to the whole process group (Ctrl-C, Slurm) must not
    kill a worker under a saving main process. A worker ignores SIGINT, and SIGTERM unless its parent sends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})     # threads started later inherit the mask
    parent = os.getppid()

    def wait_for_parent():
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(0)

    threading.Thread(target=wait_for_parent, daemon=True).start()
