"""How a run ended, decided from what the run saw: a pure function, tested on its own."""

from __future__ import annotations

import time
from dataclasses import dataclass

from parsl_es.engine.result import RunStatus


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    """What the loop knows when it leaves."""

    campaign_passed: bool
    no_space: str | None
    stopped: bool
    out_of_time: bool  # ranges or merges not started for the allocation's end, or time is up
    allocation_end: float | None
    events_left: int
    fatal_ranges: list[str]
    failed_merges: int
    validation_problems: list[str]


def decide(end: RunEnd) -> tuple[RunStatus, str]:
    """The run's status and the message a person reads, in order of precedence."""
    if end.campaign_passed:
        return RunStatus.COMPLETE, "campaign complete: every event merged and validated"
    if end.no_space:
        return (
            RunStatus.NO_SPACE,
            f"stopped: the disk is full ({end.no_space}); free space, then resume",
        )
    if end.stopped:
        return RunStatus.STOPPED, "stopped before the campaign was complete"
    if end.out_of_time:
        at = time.strftime("%H:%M:%S", time.localtime(end.allocation_end or 0))
        return RunStatus.WALLTIME, (
            f"allocation ends at {at}: stopped starting ranges that could not finish in "
            f"time; {end.events_left} events left for the next allocation"
        )
    if end.fatal_ranges or end.failed_merges:
        parts = []
        if end.fatal_ranges:
            parts.append(f"{len(end.fatal_ranges)} ranges fatal (e.g. {end.fatal_ranges[0]})")
        if end.failed_merges:
            parts.append(f"{end.failed_merges} merge groups failed")
        return RunStatus.FAILED, "campaign incomplete: " + ", ".join(parts)
    return RunStatus.FAILED, "campaign validation failed: " + "; ".join(end.validation_problems[:3])
