"""Results the simulated backend makes up for each worker function, without the work.

Ranges get plausible records (no file is written), a merge writes a small file
under its attempt's name (the engine renames it into ``merged/``), and
validations pass. Fault injection for ranges (payload failures, permanent
failures) happens here, drawn from the simulation's own random stream.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parsl_es import apps, fileio
from parsl_es.records import (
    BundleResult,
    CampaignVerdict,
    MergedFile,
    MergeVerdict,
    Plots,
    RangeResult,
    ResultRows,
    Where,
    result_row,
)
from parsl_es.states import FailureKind, Outcome


@dataclass(frozen=True)
class Made:
    """What a made-up result may depend on: where and when the task ran, and the faults."""

    where: Where
    started: float
    finished: float
    durations: list[float]  # of each range of a simulate task
    faults: Any  # SimFaults
    rng: random.Random


def simulate_ranges(args: list, made: Made) -> bytes:
    """A reply as a worker's: each range's numbers by the plan's arithmetic (``rows``),
    not an ``EventRange`` each (the machine makes up 100,000 of these a second)."""
    _, _, plan, work, _, _ = args
    rows, t = [], made.started  # ``RESULT_FIELDS`` columns: what a reply carries
    permanent, rate, rng = made.faults.permanent_ranges, made.faults.range_failure_rate, made.rng
    work = apps.unpack(work)
    numbers = plan.rows([index for index, _ in work])
    for (index, attempt), seconds, (_, rid, first, last, group) in zip(
        work, made.durations, numbers, strict=True
    ):
        end = t + seconds
        if index in permanent:
            rows.append(result_row(_failure(index, attempt, FailureKind.PERMANENT, t, end)))
        elif rng.random() < rate:
            rows.append(result_row(_failure(index, attempt, FailureKind.PAYLOAD, t, end)))
        else:
            output = f"ranges/group-{group:06d}/{rid}.attempt-{attempt}.sim"
            n = last - first + 1
            rows.append(
                (index, attempt, Outcome.DONE, t, end, output, 100 * n, "00000001", n, None, None)
            )
        t = end
    return apps.pack(
        BundleResult(where=made.where, setup_seconds=0.0, results=ResultRows(tuple(rows)))
    )


def _failure(index: int, attempt: int, kind: FailureKind, t0: float, t1: float) -> RangeResult:
    return RangeResult(
        index=index,
        attempt=attempt,
        outcome=Outcome.FATAL if kind is FailureKind.PERMANENT else Outcome.FAILED,
        started=t0,
        finished=t1,
        failure=kind,
        error=f"simulated {kind} failure",
    )


def merge_group(args: list, made: Made) -> MergedFile:
    _, _, group, output_dir, _, attempt = args
    out = Path(output_dir)
    path = apps.merge_attempt_path(out, group, attempt, ".sim")
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_text_atomic(path, f"{group.first_event}..{group.last_event}\n")
    return MergedFile(
        group=group.index,
        attempt=attempt,
        output=str(path.relative_to(out)),
        size=path.stat().st_size,
        checksum=fileio.adler32(path),
        n_events=group.n_events,
        started=made.started,
        finished=made.finished,
        where=made.where,
    )


def validate_merge(args: list, made: Made) -> MergeVerdict:
    group = args[2]
    return MergeVerdict(
        group=group.index,
        passed=True,
        n_events=group.n_events,
        started=made.started,
        finished=made.finished,
        where=made.where,
    )


def validate_campaign(args: list, made: Made) -> CampaignVerdict:
    report = {"events_expected": args[2].events, "simulated": True}
    return CampaignVerdict(
        passed=True, report=report, started=made.started, finished=made.finished, where=made.where
    )


def plot_campaign(args: list, made: Made) -> Plots:
    return Plots(files=(), started=made.started, finished=made.finished, where=made.where)


#: The made-up result of each worker function, by its name in ``parsl_es.apps``.
MADE_UP: dict[str, Callable[[list, Made], Any]] = {
    "simulate_ranges": simulate_ranges,
    "merge_group": merge_group,
    "validate_merge": validate_merge,
    "validate_campaign": validate_campaign,
    "plot_campaign": plot_campaign,
}


def in_sim_time(packed: bytes, started: float, durations: list[float]) -> bytes:
    """A real bundle's reply with each range's start and end on the simulated clock.

    The engine sizes bundles and deadlines from recorded durations: a range that
    took 2 ms of real time and 1 s of the machine's must say 1 s.
    """
    reply: BundleResult = apps.unpack(packed)
    rows, t = [], started
    for row, seconds in zip((result_row(r) for r in reply.results), durations, strict=True):
        rows.append((*row[:3], t, t + seconds, *row[5:]))
        t += seconds
    return apps.pack(dataclasses.replace(reply, results=ResultRows(tuple(rows))))
