"""Running estimates of how long work takes: one set, shared by every policy that asks.

The walltime cut-off, the range timeouts and the bundle sizing all read the same
per-node-type range durations and the same merge durations, fed once as
results are recorded.
"""

from __future__ import annotations

from collections import deque

#: Observed durations kept for an estimate.
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

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of recent durations (None before the first)."""
        if not self._seen:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._seen)
        ordered = self._sorted
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def p90(self) -> float | None:
        return self.percentile(0.9)


class Estimates:
    """Range durations per node type and merge durations, for the whole engine."""

    def __init__(self) -> None:
        self._ranges: dict[str, DurationEstimate] = {}
        self.merges = DurationEstimate()

    def ranges(self, node_type: str) -> DurationEstimate:
        return self._ranges.setdefault(node_type, DurationEstimate())

    def known(self, node_type: str) -> bool:
        """Whether any range of this node type has finished yet."""
        return self.ranges(node_type).count > 0
