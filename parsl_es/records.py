"""What crosses between workers and the driver: frozen records, built with keywords.

Workers return these from the step functions in ``apps``; backends report
worker pools as ``PoolInfo``; the ledger stores them. Nothing is read by key
from a dict on either side, so a renamed field is an error at once, not a
silently missing value. The range records are plain (not slotted) frozen
dataclasses: thousands travel per second, and the C pickler handles those
almost as cheaply as tuples.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from parsl_es.states import FailureKind, MergeState, Outcome, Verdict


@dataclass(frozen=True, kw_only=True)
class Where:
    """Where a task ran: node, worker process, batch job, accelerator, worker pool."""

    host: str | None = None
    worker: str | None = None
    slurm_job: str | None = None
    accelerator: str | None = None
    pool: str | None = None  # HTEX's manager: how the driver spots a wedged pool
    block: str | None = None

    @classmethod
    def here(cls) -> Where:
        """This process, as a worker reports itself."""
        host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        return cls(
            host=host,
            worker=f"{host}:{os.getpid()}",
            slurm_job=os.environ.get("SLURM_JOB_ID"),
            accelerator=os.environ.get("CUDA_VISIBLE_DEVICES"),
            pool=os.environ.get("PARSL_WORKER_POOL_ID"),
            block=os.environ.get("PARSL_WORKER_BLOCK_ID"),
        )


NOWHERE = Where()


@dataclass(frozen=True, kw_only=True)
class RangeResult:
    """What one attempt of one event range came to.

    Made by the worker (``DONE`` with its file, or a failure with its kind), or by
    the driver for attempts that never reported (``LOST``, ``TIMEOUT``).
    """

    index: int
    attempt: int
    outcome: Outcome
    started: float | None = None
    finished: float | None = None
    output: str | None = None  # relative to the campaign's output directory
    size: int | None = None
    checksum: str | None = None  # adler32, hex
    n_events: int | None = None
    failure: FailureKind | None = None  # the worker's classification, when not DONE
    error: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Fields left at None stay out of the pickle (the class holds that default):
        # thousands of results a second are unpickled by the driver.
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True, kw_only=True)
class TransformStart:
    """One start of a long-lived transform (the command payload's service mode).

    A framework such as Athena initialises for minutes: each start, and whether it
    replaced one that died, hung or misbehaved, is what an operator needs to see.
    """

    started: float  # epoch seconds
    init_seconds: float | None  # start to its first "Ready for events"; None: never ready
    restart: bool  # it replaced a transform of the same worker


#: ``RangeResult``'s fields in order: the columns of ``ResultRows.rows``.
RESULT_FIELDS = (
    "index",
    "attempt",
    "outcome",
    "started",
    "finished",
    "output",
    "size",
    "checksum",
    "n_events",
    "failure",
    "error",
)


assert tuple(RangeResult.__dataclass_fields__) == RESULT_FIELDS


def result_row(r: RangeResult) -> tuple:
    return (
        r.index,
        r.attempt,
        r.outcome,
        r.started,
        r.finished,
        r.output,
        r.size,
        r.checksum,
        r.n_events,
        r.failure,
        r.error,
    )


def _result_from_row(row: tuple) -> RangeResult:
    r = object.__new__(RangeResult)
    r.__dict__.update(zip(RESULT_FIELDS, row, strict=True))
    return r


class ResultRows(Sequence[RangeResult]):
    """A bundle's range results as the driver receives them: plain tuples (``rows``,
    columns as ``RESULT_FIELDS``), ``RangeResult`` objects made only when asked for.

    Unpickling a frozen dataclass per range cost the driver several microseconds a
    range; the hot path (a bundle whose ranges all succeeded) reads ``rows`` alone.
    """

    __slots__ = ("_objects", "rows")

    def __init__(self, rows: tuple[tuple, ...]) -> None:
        self.rows = rows
        self._objects: tuple[RangeResult, ...] | None = None

    def _all(self) -> tuple[RangeResult, ...]:
        if self._objects is None:
            self._objects = tuple(_result_from_row(row) for row in self.rows)
        return self._objects

    @overload
    def __getitem__(self, i: int) -> RangeResult: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[RangeResult, ...]: ...
    def __getitem__(self, i: Any) -> Any:
        return self._all()[i]

    def __iter__(self) -> Iterator[RangeResult]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ResultRows({self._all()!r})"

    def __reduce__(self) -> tuple:
        return (ResultRows, (self.rows,))


@dataclass(frozen=True, kw_only=True)
class BundleResult:
    """A simulate task's reply: where it ran once, and every range of its bundle.

    Pickled with its results as plain tuples (``ResultRows``): thousands of ranges a
    second come back to one driver.
    """

    where: Where
    setup_seconds: float  # payload initialisation paid by this task (a worker's first)
    results: Sequence[RangeResult]
    transform_starts: tuple[TransformStart, ...] = ()  # during this task (service mode)

    def __reduce__(self) -> tuple:
        results = self.results
        rows = (
            results.rows
            if isinstance(results, ResultRows)
            else tuple(result_row(r) for r in results)
        )
        return (_bundle_result, (self.where, self.setup_seconds, rows, self.transform_starts))


def _bundle_result(
    where: Where, setup_seconds: float, rows: tuple[tuple, ...], starts: tuple
) -> BundleResult:
    return BundleResult(
        where=where, setup_seconds=setup_seconds, results=ResultRows(rows), transform_starts=starts
    )


@dataclass(frozen=True, kw_only=True)
class TaskOutcomes:
    """Range results of one task as the ledger records them: with node type and place."""

    node_type: str
    where: Where
    results: Sequence[RangeResult]  # a tuple, or a reply's ``ResultRows``
    setup_seconds: float | None = None
    transform_starts: tuple[TransformStart, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MergedFile:
    """One merge group's merged file, complete on disk under its attempt's name."""

    group: int
    attempt: int
    output: str  # relative to the campaign's output directory
    size: int
    checksum: str
    n_events: int
    started: float
    finished: float
    where: Where = NOWHERE


@dataclass(frozen=True, kw_only=True)
class MergeVerdict:
    """The validation of one merged file."""

    group: int
    passed: bool
    problems: tuple[str, ...] = ()
    n_events: int = 0
    started: float | None = None
    finished: float | None = None
    where: Where = NOWHERE


@dataclass(frozen=True, kw_only=True)
class CampaignVerdict:
    """The campaign-wide proof: every event exactly once across merged files."""

    passed: bool
    problems: tuple[str, ...] = ()
    #: Merge groups whose merged file is missing, damaged or wrong: redone by resume.
    bad_groups: dict[int, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # the full report (campaign.json)
    started: float | None = None
    finished: float | None = None
    where: Where = NOWHERE


@dataclass(frozen=True, kw_only=True)
class Plots:
    """The campaign's summed physics histograms, drawn beside its validation."""

    files: tuple[str, ...]
    started: float
    finished: float
    where: Where = NOWHERE


@dataclass(frozen=True, kw_only=True)
class PoolInfo:
    """One worker pool (an HTEX manager, or a simulated one) as the backend sees it."""

    pool: str
    block: str | None
    workers: int
    tasks: int  # tasks it holds now
    active: bool = True


@dataclass(frozen=True, kw_only=True)
class MergeRecord:
    """A merge group as the ledger holds it (sent to the campaign validation's worker)."""

    group: int
    first_range: int
    last_range: int
    first_event: int
    last_event: int
    state: MergeState
    attempts: int = 0
    output: str | None = None
    size: int | None = None
    checksum: str | None = None
    n_events: int | None = None
    validation: Verdict | None = None
    node_type: str | None = None
    started: float | None = None
    finished: float | None = None
    error: str | None = None
