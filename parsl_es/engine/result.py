"""What a run of the driver reports: live progress snapshots and the final result."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """How a run of the driver ended (the CLI maps each to an exit code)."""

    COMPLETE = "complete"  # every event merged and validated
    FAILED = "failed"  # fatal ranges, failed merges, or validation found problems
    STOPPED = "stopped"  # Ctrl-C / SIGTERM / cancel before completion: resumable
    WALLTIME = "walltime"  # the allocation is ending: stopped in time, resumable
    NO_SPACE = "no_space"  # the disk is full: free space, then resume


@dataclass(frozen=True, kw_only=True)
class Progress:
    """A snapshot for progress displays (CLI bar, notebook widget, logs)."""

    events_total: int
    events_done: int
    ranges_total: int
    ranges_done: int
    ranges_in_flight: int
    failures: int
    fatal: int
    merges_total: int
    merges_done: int
    merges_validated: int
    elapsed: float
    events_per_second: float
    stopping: bool = False
    tasks_in_flight: int = 0  # tasks (bundles of ranges) in flight
    step: str | None = None  # the chain step this is the progress of
    #: A chain's progress per step, in chain order (the totals above add them up: each
    #: event counts once per step). Empty for a single-step campaign.
    steps: tuple[Progress, ...] = ()

    @property
    def eta_seconds(self) -> float | None:
        left = self.events_total - self.events_done
        return left / self.events_per_second if self.events_per_second > 0 else None


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What one run of the driver achieved (a campaign may need several runs)."""

    status: RunStatus
    wall_seconds: float
    events_this_run: int
    ranges_this_run: int
    merges_this_run: int
    failures: int
    fatal_ranges: list[str]  # range ids; a chain's as STEP:ID
    failed_merges: list[int | str]  # merge groups; a chain's as STEP:GROUP
    payload_inits: int
    workers: int
    validation: dict[str, Any] | None
    message: str
    per_node_type: dict[str, int] = field(default_factory=dict)
    last_range_started: float | None = None
    ended: float | None = None
    allocation_end: float | None = None
    timeouts: int = 0
    wedged_pools: int = 0
    #: A chain's figures per step (events, ranges, merges, events_per_second, validation).
    per_step: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events_this_run / self.wall_seconds if self.wall_seconds > 0 else 0.0
