"""When a range, a bundle or a merge has run too long.

Raythena and Yoda give every event range a fixed 600 s. Ranges of one campaign
take from well under a second to many minutes, so parsl-es derives the timeout
from what it sees: ``factor`` times the 99th percentile of recent range
durations on that node type, kept between a floor and a ceiling (the ceiling
until enough ranges have finished to trust the estimate).
"""

from __future__ import annotations

from dataclasses import dataclass

from parsl_es.engine.estimates import DurationEstimate, Estimates

#: Finished ranges needed before the observed durations replace the ceiling.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class TimeoutPolicy:
    factor: float = 5.0
    floor: float = 60.0
    ceiling: float = 3600.0
    slack: float = 10.0  # added to allowances: a busy machine's delays

    def timeout_for(self, est: DurationEstimate) -> float:
        """``factor`` x the p99 of ``est`` within floor and ceiling (the ceiling until trusted)."""
        if est.count < MIN_SAMPLES:
            return self.ceiling
        return min(self.ceiling, max(self.floor, self.factor * (est.percentile(0.99) or 0.0)))


class RangeTimeouts:
    """The current range timeout of each node type, and bundles' allowances."""

    def __init__(self, policy: TimeoutPolicy, estimates: Estimates) -> None:
        self.policy = policy
        self.estimates = estimates

    def current(self, node_type: str) -> float:
        return self.policy.timeout_for(self.estimates.ranges(node_type))

    def bundle_allowance(self, node_type: str, n_ranges: int) -> float:
        """How long a bundle of ``n_ranges`` may take from submission to result.

        Queued behind about one other bundle, then its own ranges (each at most the
        range timeout, together at most ``factor`` times their expected time), plus
        slack for a busy machine.
        """
        est = self.estimates.ranges(node_type)
        timeout = self.policy.timeout_for(est)
        p99 = est.percentile(0.99) or timeout
        own = max(timeout, self.policy.factor * n_ranges * p99)
        return 2 * own + max(self.policy.slack, 0.5 * timeout)

    def merge_allowance(self) -> float:
        """How long a merge or validation may run before its pools are suspected wedged."""
        return 2 * self.policy.timeout_for(self.estimates.merges) + self.policy.slack
