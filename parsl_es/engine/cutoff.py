"""Whether work still fits before the allocation ends.

A batch allocation ends at a fixed time. Knowing it (``--end``, ``--walltime``,
or Slurm's ``SLURM_JOB_END_TIME``) and the running duration estimates, the
driver stops starting work that cannot finish in time, so that the allocation
ends with nothing half-done and the next one resumes cleanly.
"""

from __future__ import annotations

from parsl_es.engine.estimates import Estimates


class Cutoff:
    """Decides, against the allocation's end, whether new work may start."""

    def __init__(self, end: float | None, margin: float, estimates: Estimates) -> None:
        self.end = end
        self.margin = margin
        self.estimates = estimates
        self.reached_at: float | None = None

    def _fits(self, seconds: float | None, now: float) -> bool:
        if self.end is None:
            return True
        return now + (seconds or 0.0) <= self.end - self.margin

    def may_start_range(self, node_type: str, now: float) -> bool:
        ok = self._fits(self.estimates.ranges(node_type).p90(), now)
        if not ok and self.reached_at is None:
            self.reached_at = now
        return ok

    def ranges_that_fit(self, node_type: str, now: float) -> int | None:
        """How many ranges of ``node_type`` one after another still fit (None: no limit).

        A bundle of ranges runs them in turn: it must not outlast the allocation.
        """
        p90 = self.estimates.ranges(node_type).p90()
        if self.end is None or not p90:
            return None
        return int((self.end - self.margin - now) // p90)

    def may_start_merge(self, now: float) -> bool:
        return self._fits(self.estimates.merges.p90(), now)

    def must_leave(self, now: float) -> bool:
        """Past this point the driver exits whatever is in flight (redone on resume)."""
        return self.end is not None and now >= self.end - self.margin / 2
