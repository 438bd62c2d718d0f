"""Python's cyclic garbage collector while a driver runs: full collections made rare.

A driver keeps every in-flight task alive (its future, its call, its ranges):
at a whole machine that is millions of objects, nearly none of them garbage.
With CPython's default thresholds a full collection follows every hundred or so
young ones and walks every one of those objects. At 100,000 simulated workers x
1 s ranges that was 21 full collections in a 200 s window and 19 % of the
window's time (``python -m benchmarks.scale --workers 100000 --range-seconds 1
--seconds 200 --latest-start 90 --python-gc``: ``driver_gc_share``,
``driver_full_collections``); the same run with these thresholds spent 1.8 %.

The thresholds are the process's, so a notebook running two campaigns at once
shares them: the first run to start sets them, the last to end puts back what
was there before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class CollectorThresholds:
    """``gc.set_threshold`` arguments: when each generation is collected."""

    young: int = 50_000  # tracked allocations (net) between young collections; CPython: 700
    middle: int = 20  # young collections per middle one; CPython: 10
    full: int = 100  # middle collections per full one; CPython: 10

    def __post_init__(self) -> None:
        if min(self.young, self.middle, self.full) < 1:
            raise ValueError(f"collector thresholds must be at least 1: {self}")

    def allocations_per_full_collection(self) -> int:
        """Net tracked allocations between two full collections (at most that often)."""
        return self.young * self.middle * self.full


#: The driver's: a full collection at most every 10^8 net allocations (CPython: 7 x 10^4).
DRIVER_THRESHOLDS = CollectorThresholds()

_lock = threading.Lock()
_runs = 0
_before: tuple[int, ...] = ()


@contextmanager
def driver_collector(
    thresholds: CollectorThresholds | None = DRIVER_THRESHOLDS,
) -> Iterator[None]:
    """Run the block with ``thresholds``; the process's own come back after the last
    overlapping block ends. None: the process's thresholds as they are."""
    global _runs, _before
    if thresholds is None:
        yield
        return
    with _lock:
        if _runs == 0:
            _before = gc.get_threshold()
            gc.set_threshold(thresholds.young, thresholds.middle, thresholds.full)
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_before)
