"""What a failed range attempt was, and whether it should cost the range an attempt.

Big machines lose workers, nodes and whole blocks; file systems hiccup. Those
failures say nothing about the range, so they must not use up its attempts:
only the payload's own failures do. A permanent failure (bad parameters, bad
input, a payload error marked fatal) will never succeed and is not retried.

Kinds, as workers report them and the ledger counts them:

``payload``        the payload raised: counts against the range's ``attempts``
``permanent``      ``FatalPayloadError``: the range is fatal at once
``infrastructure`` an I/O error, a lost worker, node or block, a lost service-mode
                   transform (``TransformLost``): retried, not counted
                   as a payload failure (a range that keeps killing its workers is
                   stopped after ``RetryBudget.lost_factor`` times its attempts)
``timeout``        the range ran far longer than ranges do: presumed hung, redone
                   elsewhere, counted like ``infrastructure``
``no_space``       the disk is full: the campaign stops (nothing more can be written)
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from parsl_es.payloads.base import PayloadError, TransformLost
from parsl_es.states import FailureKind

#: Exit status of a worker that the hard watchdog ended.
HUNG_EXIT_STATUS = 75


class RangeTimeout(PayloadError):
    """The range outlived its timeout on the worker."""


def classify(exc: BaseException) -> FailureKind:
    """The kind of a failure raised while simulating a range on a worker.

    (A lost worker never reaches this: the driver learns of it from its backend.)
    """
    if isinstance(exc, RangeTimeout):
        return FailureKind.TIMEOUT
    if isinstance(exc, TransformLost):
        return FailureKind.INFRASTRUCTURE
    if isinstance(exc, PayloadError):
        return FailureKind.PAYLOAD if exc.transient else FailureKind.PERMANENT
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return FailureKind.NO_SPACE
        return FailureKind.INFRASTRUCTURE
    return FailureKind.PAYLOAD


@contextmanager
def range_deadline(seconds: float | None, grace: float | None = None) -> Iterator[None]:
    """Raise ``RangeTimeout`` in the range after ``seconds``; end the worker if that fails.

    The soft limit is SIGALRM, which interrupts Python code and sleeping system
    calls (HTEX runs tasks in the worker's main thread). A payload stuck in C code
    that never returns to Python is stopped by the hard limit ``grace`` seconds
    later: the worker process exits, Parsl reports it lost and restarts it, so a
    hung range never holds a worker slot for the rest of the campaign.
    """
    if not seconds or seconds <= 0:
        yield
        return
    grace = max(10.0, 0.5 * seconds) if grace is None else grace
    in_main = threading.current_thread() is threading.main_thread()
    previous = None
    if in_main:

        def _soft(signum: int, frame: object) -> None:
            raise RangeTimeout(f"range ran longer than its timeout of {seconds:.0f} s")

        previous = signal.signal(signal.SIGALRM, _soft)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    _WATCHDOG.arm(time.monotonic() + seconds + grace)
    try:
        yield
    finally:
        _WATCHDOG.disarm()
        if in_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


class _HardWatchdog:
    """One thread per worker process that ends the process at an armed deadline.

    Started on first use and kept: starting a thread per range would cost more
    than a short range itself.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> None:
        with self._cond:
            self._deadline = deadline
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._deadline = None

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left <= 0:
                    _end_worker()
                self._cond.wait(left)


_WATCHDOG = _HardWatchdog()


def _end_worker() -> None:
    print("parsl-es: range still running past its hard deadline; ending worker", file=sys.stderr)
    sys.stderr.flush()
    os._exit(HUNG_EXIT_STATUS)
