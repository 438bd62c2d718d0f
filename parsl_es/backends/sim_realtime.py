"""The simulated machine's meters and its real-time side, apart from its mechanics.

``BusyMeter`` integrates how many virtual workers are busy over time (what a
scale run's utilisation is). ``RealTime`` is the clock and the thread of a
machine run in real time (``SimulatedBackend(clock="real")``): submissions are
posted to an inbox, and the machine's thread runs each event when its time has
come and each posted item as it arrives, under one lock, so the driver thread
only hands work over and its CPU time is the engine's alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: How long the machine's thread stays off its lock between two slices of due events.
YIELD_SECONDS = 0.001


class BusyMeter:
    """Worker-seconds busy since the start, and when every worker was first busy."""

    def __init__(self, workers: int, start: float) -> None:
        self.workers = workers
        self.busy = 0
        self._integral = 0.0
        self._since = start
        self.all_busy_at: float | None = None

    def change(self, now: float, by: int) -> None:
        self._integral += self.busy * (now - self._since)
        self._since = now
        self.busy += by
        if self.busy >= self.workers and self.all_busy_at is None:
            self.all_busy_at = now

    def at(self, now: float) -> tuple[float, float, int]:
        """``(now, worker-seconds busy so far, workers busy now)``."""
        return now, self._integral + self.busy * (now - self._since), self.busy


class RealTime:
    """A machine's real-time clock and thread.

    ``run(now, inbox)`` is called in the thread, under ``lock``, whenever something
    was posted or ``next_event()`` (the time of the earliest scheduled event, or
    None) has come. It returns whether events are still due (it ran a slice of
    them): the lock is then let go for a moment, so that a query waiting for it
    gets in before the next slice.
    """

    def __init__(
        self,
        run: Callable[[float, deque[Any]], bool],
        next_event: Callable[[], float | None],
        offset: float | None = None,
    ) -> None:
        # the monotonic clock, shown as epoch seconds from construction on (or from
        # ``offset``'s anchor: another process's, so both tell the same time)
        self._offset = time.time() - time.monotonic() if offset is None else offset
        self.lock = threading.RLock()
        self._run = run
        self._next_event = next_event
        self._wake = threading.Condition(threading.Lock())
        self._inbox: deque[Any] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name="sim-machine", daemon=True)

    def now(self) -> float:
        return time.monotonic() + self._offset

    @property
    def alive(self) -> bool:
        """Whether the machine's thread is running (not yet closed)."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def post(self, item: Any) -> None:
        with self._wake:
            self._inbox.append(item)
            if len(self._inbox) == 1:
                self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closing:
                        return
                    if self._inbox:
                        break
                    due = self._next_event()
                    wait = due - self.now() if due is not None else 1.0
                    if wait <= 0:
                        break
                    self._wake.wait(min(wait, 1.0))
                inbox, self._inbox = self._inbox, deque()
            with self.lock:
                behind = self._run(self.now(), inbox)
            if behind:
                time.sleep(YIELD_SECONDS)  # a released lock is not handed over by itself
