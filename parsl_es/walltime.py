"""Whether work still fits before the allocation ends.

A batch allocation ends at a fixed time. The driver is given it (read by
``parsl_es.allocation`` from ``--end``, ``--walltime`` or the Slurm job), keeps
running estimates of how long ranges and merges take, and stops starting work
that cannot finish in time, so that the allocation ends with nothing
half-done and the next one resumes cleanly.
"""

from __future__ import annotations

import time
from collections import deque

#: Observed durations kept for the estimate.
HISTORY = 200


class DurationEstimate:
    """A running, pessimistic estimate of how long a kind of work takes."""

    def __init__(self) -> None:
        self._seen: deque[float] = deque(maxlen=HISTORY)
        self._sorted: list[float] | None = None  # asked for per bundle, changed per batch

    def add(self, seconds: float) -> None:
        if seconds >= 0:
            self._seen.append(seconds)
            self._sorted = None

    def extend(self, seconds: list[float]) -> None:
        self._seen.extend(s for s in seconds if s >= 0)
        self._sorted = None

    @property
    def count(self) -> int:
        return len(self._seen)

    def mean(self) -> float | None:
        return sum(self._seen) / len(self._seen) if self._seen else None

    def p90(self) -> float | None:
        """The 90th percentile of recent durations (None before the first)."""
        return self.percentile(0.9)

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of recent durations (None before the first)."""
        if not self._seen:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._seen)
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Cutoff:
    """Decides, against the allocation's end, whether new work may start."""

    def __init__(self, end: float | None, margin: float) -> None:
        self.end = end
        self.margin = margin
        self.ranges: dict[str, DurationEstimate] = {}
        self.merges = DurationEstimate()
        self.reached_at: float | None = None

    def range_estimate(self, node_type: str) -> DurationEstimate:
        return self.ranges.setdefault(node_type, DurationEstimate())

    def _fits(self, seconds: float | None, now: float) -> bool:
        if self.end is None:
            return True
        return now + (seconds or 0.0) <= self.end - self.margin

    def may_start_range(self, node_type: str, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        ok = self._fits(self.range_estimate(node_type).p90(), now)
        if not ok and self.reached_at is None:
            self.reached_at = now
        return ok

    def ranges_that_fit(self, node_type: str, now: float | None = None) -> int | None:
        """How many ranges of ``node_type`` one after another still fit (None: no limit).

        A bundle of ranges runs them in turn: it must not outlast the allocation.
        """
        p90 = self.range_estimate(node_type).p90()
        if self.end is None or not p90:
            return None
        now = time.time() if now is None else now
        return int((self.end - self.margin - now) // p90)

    def may_start_merge(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self._fits(self.merges.p90(), now)

    def must_leave(self, now: float | None = None) -> bool:
        """Past this point the driver exits whatever is in flight (redone on resume)."""
        if self.end is None:
            return False
        now = time.time() if now is None else now
        return now >= self.end - self.margin / 2
