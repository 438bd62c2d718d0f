"""What the driver has achieved: campaign totals, this run's counts, and progress rates."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from parsl_es.engine.result import Progress
from parsl_es.ranges import RangePlan

#: Progress rates (and so the ETA) are measured over this recent stretch.
RATE_WINDOW_SECONDS = 30.0


@dataclass
class Counters:
    """Campaign totals (rebuilt from the ledger on resume) and this run's counts."""

    events_done: int = 0
    ranges_done: int = 0
    merges_done: int = 0
    merges_validated: int = 0
    # this run
    events: int = 0
    ranges: int = 0
    merges: int = 0
    failures: int = 0
    payload_inits: int = 0
    timeouts: int = 0
    wedged_pools: int = 0
    workers: set[str] = field(default_factory=set)
    per_node_type: dict[str, int] = field(default_factory=dict)
    fatal_ranges: set[int] = field(default_factory=set)
    failed_merges: set[int] = field(default_factory=set)
    last_range_started: float | None = None
    #: When this run's first recorded range started and its last one finished: the
    #: stretch a chain step was at work (its events/s, beside the others').
    first_started: float | None = None
    last_finished: float | None = None

    def worked(self, started: float | None, finished: float | None) -> None:
        if started is not None and (self.first_started is None or started < self.first_started):
            self.first_started = started
        if finished is not None and (self.last_finished is None or finished > self.last_finished):
            self.last_finished = finished

    @property
    def span_seconds(self) -> float:
        if self.first_started is None or self.last_finished is None:
            return 0.0
        return max(0.0, self.last_finished - self.first_started)

    def ranges_finished(self, node_type: str, n_ranges: int, n_events: int) -> None:
        self.events_done += n_events
        self.ranges_done += n_ranges
        self.events += n_events
        self.ranges += n_ranges
        self.per_node_type[node_type] = self.per_node_type.get(node_type, 0) + n_ranges

    def ranges_undone(self, n_ranges: int, n_events: int) -> None:
        """Done ranges sent back to be simulated again (their files were damaged)."""
        self.events_done -= n_events
        self.ranges_done -= n_ranges


class Rate:
    """Events per second over the last ``RATE_WINDOW_SECONDS``: what an ETA extrapolates."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def update(self, now: float, events: int) -> float:
        samples = self._samples
        samples.append((now, events))
        while len(samples) > 2 and now - samples[1][0] > RATE_WINDOW_SECONDS:
            samples.popleft()
        t_then, ev_then = samples[0]
        return (events - ev_then) / (now - t_then) if now > t_then else 0.0


def snapshot(
    plan: RangePlan,
    counters: Counters,
    *,
    elapsed: float,
    rate: float,
    ranges_in_flight: int,
    tasks_in_flight: int,
    stopping: bool,
    step: str | None = None,
) -> Progress:
    return Progress(
        events_total=plan.events,
        events_done=counters.events_done,
        ranges_total=plan.n_ranges,
        ranges_done=counters.ranges_done,
        ranges_in_flight=ranges_in_flight,
        failures=counters.failures,
        fatal=len(counters.fatal_ranges),
        merges_total=plan.n_merges,
        merges_done=counters.merges_done,
        merges_validated=counters.merges_validated,
        elapsed=elapsed,
        events_per_second=rate,
        stopping=stopping,
        tasks_in_flight=tasks_in_flight,
        step=step,
    )
