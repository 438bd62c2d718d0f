"""The ledger's read models: frozen rows and counts, typed with the state enums."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from parsl_es.records import MergeRecord
from parsl_es.states import MergeState, Outcome, RangeState, Verdict

RANGE_STATES = tuple(s.value for s in RangeState)
MERGE_STATES = tuple(s.value for s in MergeState)


@dataclass(frozen=True, slots=True)
class RangeRow:
    """One dispatched range, with where its current or last attempt ran (``range_info``)."""

    index: int
    id: str
    first_event: int
    last_event: int
    merge_group: int
    state: RangeState
    attempts: int
    failures: int
    lost: int
    node_type: str | None
    host: str | None
    worker: str | None
    slurm_job: str | None
    accelerator: str | None
    started: float | None
    finished: float | None
    duration: float | None
    output: str | None
    size: int | None
    checksum: str | None
    n_events: int | None
    error: str | None
    task: int | None  # the task (bundle) that simulated it, when done


RANGE_COLUMNS = (
    "idx, id, first_event, last_event, merge_group, state, attempts, failures, lost, node_type, "
    "host, worker, slurm_job, accelerator, started, finished, duration, output, size, checksum, "
    "n_events, error, task"
)


def range_row(t: tuple) -> RangeRow:
    return RangeRow(*t[:5], RangeState(t[5]), *t[6:])


@dataclass(frozen=True, slots=True)
class AttemptRow:
    """An attempt that did not simply succeed (a success is its range's row)."""

    index: int
    attempt: int
    outcome: Outcome
    node_type: str | None
    host: str | None
    worker: str | None
    slurm_job: str | None
    accelerator: str | None
    started: float | None
    finished: float | None
    error: str | None


ATTEMPT_COLUMNS = (
    "range_idx, attempt, outcome, node_type, host, worker, slurm_job, accelerator, started, "
    "finished, error"
)


def attempt_row(t: tuple) -> AttemptRow:
    return AttemptRow(*t[:2], Outcome(t[2]), *t[3:])


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task (a bundle of ranges) that finished ranges, and where it ran."""

    task: int
    node_type: str | None
    host: str | None
    worker: str | None
    slurm_job: str | None
    accelerator: str | None
    pool: str | None
    block: str | None
    recorded: float | None
    setup: float | None  # seconds spent initialising the payload (a worker's first task)


@dataclass(frozen=True, slots=True)
class Run:
    """A step run once somewhere: a merge, a validation, the campaign's plots."""

    worker: str | None
    started: float | None
    finished: float | None


@dataclass(frozen=True, slots=True)
class TransformRow:
    """One start of a long-lived transform (service mode), and where."""

    worker: str | None
    node_type: str | None
    started: float
    init_seconds: float | None  # None: it died or hung before it was ready
    restart: bool


TRANSFORM_COLUMNS = "worker, node_type, started, init_seconds, restart"


@dataclass(frozen=True, slots=True)
class ReportRows:
    """What the campaign report draws, from the ledger alone."""

    ranges: tuple[RangeRow, ...]  # done or merged, by start
    tasks: tuple[TaskRow, ...]  # those that paid a payload initialisation
    attempts: tuple[AttemptRow, ...]  # failed, lost, timed out, damaged: by end
    merges: tuple[MergeRecord, ...]
    merge_runs: tuple[Run, ...]  # done merges (worker, else host)
    validation_runs: tuple[Run, ...]  # per merged file, the campaign's proof and plots
    transforms: tuple[TransformRow, ...] = ()  # service mode's transform starts, by time


@dataclass(frozen=True, slots=True)
class ResumeState:
    """What a driver needs to carry on a campaign from its ledger."""

    cursor: int  # first range never dispatched
    retry: tuple[int, ...]  # ready or failed ranges with a row, in index order
    #: done ranges per merge group whose merge is not done (a done merge's are merged)
    done_per_group: dict[int, int]
    events_done: int
    ranges_done: int
    #: The merge groups the engine still acts on: not merged, or merged and not yet
    #: validated as passed. A finished group is only counted: at 10^5 groups one
    #: record each made a resume's start-up and memory grow with the campaign.
    merges: tuple[MergeRecord, ...]
    campaign_validated: bool
    merges_done: int = 0
    merges_validated: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """Counts for progress and ``es-run status``."""

    n_ranges: int
    n_merges: int
    events_total: int
    ranges: dict[str, int]
    merges: dict[str, int]
    validated: dict[str, int]
    events_done: int
    events_merged: int
    campaign_validation: str | None
    #: Where the simulated ranges ran: per node type, ranges, events, hosts, batch
    #: jobs, mean range duration, and attempts lost (worker or node gone) or failed.
    by_node_type: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Long-lived transforms (service mode), per worker: starts, restarts (starts that
    #: replaced a transform that died, hung or misbehaved) and seconds of initialisation.
    transforms: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return (
            self.merges.get("done", 0) == self.n_merges
            and self.validated.get("passed", 0) == self.n_merges
            and self.campaign_validation == "passed"
        )


def merge_record(m: sqlite3.Row) -> MergeRecord:
    return MergeRecord(
        group=m["group_idx"],
        first_range=m["first_range"],
        last_range=m["last_range"],
        first_event=m["first_event"],
        last_event=m["last_event"],
        state=MergeState(m["state"]),
        attempts=m["attempts"],
        output=m["output"],
        size=m["size"],
        checksum=m["checksum"],
        n_events=m["n_events"],
        validation=None if m["validation"] is None else Verdict(m["validation"]),
        node_type=m["node_type"],
        started=m["started"],
        finished=m["finished"],
        error=m["error"],
    )


#: ``merge_row``'s columns, in its order.
MERGE_COLUMNS = (
    "group_idx, first_range, last_range, first_event, last_event, state, attempts, output, "
    "size, checksum, n_events, validation, node_type, started, finished, error"
)


def merge_row(t: tuple) -> MergeRecord:
    """``merge_record`` from a plain tuple of ``MERGE_COLUMNS`` (a resume reads 10^5 of them)."""
    return MergeRecord(
        group=t[0],
        first_range=t[1],
        last_range=t[2],
        first_event=t[3],
        last_event=t[4],
        state=MergeState(t[5]),
        attempts=t[6],
        output=t[7],
        size=t[8],
        checksum=t[9],
        n_events=t[10],
        validation=None if t[11] is None else Verdict(t[11]),
        node_type=t[12],
        started=t[13],
        finished=t[14],
        error=t[15],
    )


TASK_COLUMNS = "task, node_type, host, worker, slurm_job, accelerator, pool, block, recorded, setup"
