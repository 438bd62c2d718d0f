"""Hung work: when a range has run too long, and which worker pool stopped answering.

Raythena and Yoda give every event range a fixed 600 s. Ranges of one campaign
take from well under a second to many minutes, so parsl-es derives the timeout
from what it sees: ``factor`` times the 99th percentile of recent range
durations on that node type, kept between a floor and a ceiling (the ceiling
until enough ranges have finished to trust the estimate).

A worker pool can wedge and still send heartbeats (e.g. when the process that
holds its shared task table dies): Parsl then never reports its tasks lost. The
driver notices that a pool holding tasks has returned no result for longer than
any range should take, and ends its block; its tasks come back as lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from parsl_es.walltime import DurationEstimate

#: Finished ranges needed before the observed durations replace the ceiling.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class TimeoutPolicy:
    factor: float
    floor: float
    ceiling: float


class RangeTimeouts:
    """The current range timeout of each node type."""

    def __init__(
        self,
        policy: TimeoutPolicy,
        estimates: Callable[[str], DurationEstimate] | None = None,
    ) -> None:
        """``estimates`` gives a node type's duration estimate (the driver shares the
        walltime cut-off's); by default the timeouts keep their own, fed by ``observe``.
        """
        self.policy = policy
        own: dict[str, DurationEstimate] = {}
        self._estimate = estimates or (lambda nt: own.setdefault(nt, DurationEstimate()))

    def observe(self, node_type: str, seconds: float) -> None:
        self._estimate(node_type).add(seconds)

    def bundle_allowance(self, node_type: str, n_ranges: int) -> float:
        """How long a bundle of ``n_ranges`` may take from submission to result.

        Queued behind about one other bundle, then its own ranges (each at most the
        range timeout, together at most ``factor`` times their expected time), plus
        slack for a busy machine.
        """
        est = self._estimate(node_type)
        timeout = self.timeout_for(est)
        p99 = est.percentile(0.99) or timeout
        own = max(timeout, self.policy.factor * n_ranges * p99)
        return 2 * own + max(10.0, 0.5 * timeout)

    def current(self, node_type: str) -> float:
        return self.timeout_for(self._estimate(node_type))

    def timeout_for(self, est: DurationEstimate) -> float:
        """``factor`` x the p99 of ``est`` within floor and ceiling (the ceiling until trusted)."""
        p = self.policy
        if est.count < MIN_SAMPLES:
            return p.ceiling
        return min(p.ceiling, max(p.floor, p.factor * (est.percentile(0.99) or 0.0)))


class PoolWatch:
    """When each worker pool (HTEX manager) last returned a result."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def result_from(self, pool: str | None, now: float) -> None:
        if pool:
            self._last[pool] = now

    def observe(self, managers: Iterable[dict[str, Any]], now: float) -> None:
        """Note the pools seen now; a pool without tasks is not waiting on anything."""
        for m in managers:
            pool = str(m.get("manager"))
            if not m.get("tasks"):
                self._last[pool] = now
            else:
                self._last.setdefault(pool, now)

    def wedged(
        self, managers: Iterable[dict[str, Any]], quiet_for: float, now: float
    ) -> list[dict[str, Any]]:
        """Active pools that hold tasks and have returned nothing for ``quiet_for`` seconds."""
        self.observe(managers, now)
        return [
            m
            for m in managers
            if m.get("active", True)
            and m.get("tasks")
            and now - self._last[str(m.get("manager"))] > quiet_for
        ]
