"""Stopping at once on a signal without leaving anything half-done.

A front end that turns SIGINT/SIGTERM into "stop now" (es-run during set-up, or
on a second signal during a graceful stop) calls ``interrupt(signum)`` from its
signal handler: ``Interrupted`` is raised in the main thread at once, and the
``finally`` blocks on its way out close the ledger, end the executors and their
workers and remove a half-made output. Some code must not be cut in two once
begun (starting Parsl, whose executors and worker blocks would be left running
with nobody to end them; ending it): it runs ``shielded()``, and an interruption
that arrives meanwhile is raised when it has finished.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """A signal asked the driver to stop at once.

    A ``BaseException``, like ``KeyboardInterrupt``: no ``except Exception`` on
    the way out may mistake it for a failure and carry on.
    """

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_depth = 0
_pending: int | None = None


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def shielded() -> Iterator[None]:
    """Run the block to its end even if ``interrupt`` is called meanwhile; raise after.

    Python's own Ctrl-C (``KeyboardInterrupt`` in a notebook or a script, where no
    front end handles SIGINT) is held back the same way and raised after the block.
    Only the main thread (where Python runs signal handlers) is shielded; in
    another thread this does nothing.
    """
    global _depth, _pending
    if not _in_main_thread():
        yield
        return
    held: list[int] = []
    default = _depth == 0 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if default:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if default:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt
    if _depth == 0 and _pending is not None:
        signum, _pending = _pending, None
        raise Interrupted(signum)


def interrupt(signum: int) -> None:
    """From a signal handler: raise ``Interrupted`` now, or when the shielded block ends."""
    global _pending
    if _depth:
        _pending = signum
        return
    raise Interrupted(signum)


def interruptible_result(future: Future, timeout: float | None) -> Any:
    """``future.result(timeout)`` that a Ctrl-C interrupts however busy the machine is.

    Python runs signal handlers in the main thread only when it runs bytecode; a signal
    the kernel hands to another thread leaves a main thread blocked on a lock asleep
    until the campaign ends (seen under CI's load). Waking twice a second lets it run
    the handler.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
        try:
            return future.result(max(0.0, left))
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise
