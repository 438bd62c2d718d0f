"""Event-range transitions: start ranges, record what their attempts came to.

Only ranges that were ever dispatched have a row: a range without one is
``ready`` by definition (its numbers follow from the campaign). Every call is
one transaction. A range becomes ``done`` only with its output already complete
on disk, its checksum and event count recorded. What a failed attempt does to
its range is decided by ``states.after_outcome`` alone.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from parsl_es.ledger.core import LedgerCore
from parsl_es.ranges import RangePlan
from parsl_es.records import RangeResult, TaskOutcomes, Where
from parsl_es.states import AttemptCounts, Outcome, RangeState, RetryBudget, after_outcome

#: The ranges of merge group ``?`` (twice), by primary key: no scan of the whole table.
IN_GROUP = (
    "idx BETWEEN (SELECT first_range FROM merges WHERE group_idx=?) "
    "AND (SELECT last_range FROM merges WHERE group_idx=?)"
)
_INSERT_FRESH = (
    "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, seed, state, attempts, "
    "node_type, started) VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?)"
)
#: The fresh ranges ``?1..?2`` started on one node type, their numbers worked out by
#: SQLite as ``RangePlan.rows`` does (``?3`` campaign, ``?4`` first event, ``?5`` events
#: per range, ``?6`` last event, ``?7`` ranges per merge): no Python tuple per range.
_INSERT_SPAN = (
    "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, state, attempts, "
    "node_type, started) "
    "WITH RECURSIVE span(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM span WHERE i < ?2) "
    "SELECT i, ?3 || '-' || (?4 + i * ?5) || '-' || min(?4 + i * ?5 + ?5 - 1, ?6), "
    "?4 + i * ?5, min(?4 + i * ?5 + ?5 - 1, ?6), i / ?7, 'running', 1, ?8, ?9 FROM span"
)
_START_RETRY = (
    _INSERT_FRESH + " ON CONFLICT(idx) DO UPDATE SET state='running', attempts=attempts+1, "
    "node_type=excluded.node_type, started=excluded.started, finished=NULL, "
    "host=NULL, worker=NULL, slurm_job=NULL, accelerator=NULL, task=NULL, error=NULL "
    "WHERE state IN ('ready', 'failed') RETURNING attempts"
)
_INSERT_TASK = (
    "INSERT INTO tasks (node_type, host, worker, slurm_job, accelerator, pool, block, recorded, "
    "setup) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_TRANSFORM = (
    "INSERT INTO transforms (node_type, host, worker, pool, block, started, init_seconds, "
    "restart) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_MARK_DONE = (
    "UPDATE ranges SET state='done', task=?, started=?, finished=?, output=?, size=?, "
    "checksum=?, n_events=?, error=NULL WHERE idx=? AND attempts=? AND state='running'"
)
_INSERT_ATTEMPT = (
    "INSERT INTO attempts (range_idx, attempt, outcome, node_type, host, worker, slurm_job, "
    "accelerator, started, finished, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MARK_FAILED = (
    "UPDATE ranges SET state=?, failures=?, lost=?, error=?, finished=?, host=?, worker=?, "
    "slurm_job=?, accelerator=? WHERE idx=? AND attempts=? AND state='running'"
)


@contextmanager
def checked_states(conn: sqlite3.Connection) -> Iterator[None]:
    """Statements whose every ``state`` is valid by construction: without the CHECK.

    The ranges table's ``CHECK (state IN (...))`` makes SQLite build a temporary
    table of the six states for every row written (``OpenEphemeral``): more than
    half the cost of a range's INSERT or UPDATE. Every state written inside these
    blocks is a literal of the statement ('running', 'done', 'merged') or a
    ``RangeState``'s value, so it cannot break that check; it is off only inside
    them (one per transaction: turning it off or on re-prepares the statements).
    """
    conn.execute("PRAGMA ignore_check_constraints=1")
    try:
        yield
    finally:
        conn.execute("PRAGMA ignore_check_constraints=0")


#: ``(node type, indices)``: the ranges of one task, as the engine starts them.
Bundle = tuple[str, Sequence[int]]
#: ``(first, last, node type)``: fresh ranges ``first..last`` started on one node type.
Span = tuple[int, int, str]


def consecutive_runs(work: Iterable[tuple[int, str]]) -> Iterator[Span]:
    """``(first, last, node type)`` of each run of ``(index, node type)`` pairs whose
    indices are consecutive, in order, and on one node type."""
    run: list | None = None
    for i, nt in work:
        if run is not None and i == run[1] + 1 and nt == run[2]:
            run[1] = i
            continue
        if run is not None:
            yield run[0], run[1], run[2]
        run = [i, i, nt]
    if run is not None:
        yield run[0], run[1], run[2]


def add_span(spans: list[Span], first: int, last: int, node_type: str) -> None:
    """Append ``first..last``, joined to the previous span if it goes on from it."""
    if spans and spans[-1][2] == node_type and spans[-1][1] + 1 == first:
        spans[-1] = (spans[-1][0], last, node_type)
    else:
        spans.append((first, last, node_type))


_DONE = Outcome.DONE
#: Outcomes that move a running range (to failed or fatal) through ``after_outcome``.
_MOVING = frozenset({Outcome.FAILED, Outcome.FATAL, Outcome.LOST, Outcome.TIMEOUT})


class RangeWrites(LedgerCore):
    """The range transitions the engine makes."""

    def start_ranges(
        self, bundles: Sequence[Bundle], now: float, fresh_from: int
    ) -> list[list[int]]:
        """Mark the ranges of ``bundles`` running in one transaction; return their
        attempts, bundle by bundle.

        Ranges with an index of at least ``fresh_from`` were never dispatched: they
        are inserted as spans of consecutive indices, the cheap path that keeps the
        ledger off the critical path of fast campaigns (a feed hands out its fresh
        ranges as a ``range``: a whole bundle is one span, with nothing done per
        range in Python). The others (retries) go one by one: only a ready or
        failed range can start; anything else means the caller lost track, and
        the whole batch is refused (``RuntimeError``).
        """
        spans: list[Span] = []
        loose: list[tuple[int, str]] = []  # fresh ranges of bundles that are not one span
        retries: list[tuple[list[int], int, int, str]] = []  # (attempts, position, index, nt)
        attempts: list[list[int]] = []
        for node_type, indices in bundles:
            tries = [1] * len(indices)
            attempts.append(tries)
            if isinstance(indices, range) and indices.step == 1 and indices.start >= fresh_from:
                if indices:
                    add_span(spans, indices.start, indices.stop - 1, node_type)
                continue
            for pos, index in enumerate(indices):
                if index >= fresh_from:
                    loose.append((index, node_type))
                else:
                    retries.append((tries, pos, index, node_type))
        for first, last, node_type in consecutive_runs(loose):
            add_span(spans, first, last, node_type)
        with self.transaction() as conn:
            if spans:
                try:
                    with checked_states(conn):
                        self._insert_fresh(conn, spans, now)
                except sqlite3.IntegrityError:
                    raise RuntimeError("a range started as new is already in the ledger") from None
            for tries, pos, index, node_type in retries:
                tries[pos] = self._start_retry(conn, index, node_type, now)
        return attempts

    def _start_retry(self, conn: sqlite3.Connection, index: int, node_type: str, now: float) -> int:
        r = self.plan.range(index)
        row = conn.execute(
            _START_RETRY,
            (
                r.index,
                r.id,
                r.first_event,
                r.last_event,
                r.merge_group,
                r.seed if self._stores_seed else None,
                node_type,
                now,
            ),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"range {r.id} is not ready; cannot start it")
        return int(row[0])

    def _insert_fresh(self, conn: sqlite3.Connection, spans: list[Span], now: float) -> None:
        """Rows for never-dispatched ranges: for a campaign of generated events, one
        statement per span; a dataset's ranges, or a ledger that stores seeds, one
        row each from the plan."""
        plan = self.plan
        if self._stores_seed or not isinstance(plan, RangePlan):
            node_types = {i: nt for first, last, nt in spans for i in range(first, last + 1)}
            conn.executemany(
                _INSERT_FRESH,
                [
                    (
                        *row,
                        plan.range(row[0]).seed if self._stores_seed else None,
                        node_types[row[0]],
                        now,
                    )
                    for row in plan.rows(list(node_types))
                ],
            )
            return
        numbers = (
            plan.campaign,
            plan.first_event,
            plan.events_per_range,
            plan.last_event,
            plan.ranges_per_merge,
        )
        for first, last, node_type in spans:
            conn.execute(_INSERT_SPAN, (first, last, *numbers, node_type, now))

    def record(
        self, batches: Sequence[TaskOutcomes], budget: RetryBudget
    ) -> list[list[RangeState | None]]:
        """Record the results of tasks' range attempts in one transaction.

        The one write path for range results. Per task: where it ran is written
        once and its ranges' successes are one batched UPDATE; every other
        outcome is an ``attempts`` row, and a failure moves its range as
        ``states.after_outcome`` decides. Returns each result's new range state,
        ``None`` where the result no longer applies (its attempt is not the
        range's current one, or it is ``LATE``: recorded, never applied).
        """
        with self.transaction(), checked_states(self._conn):
            self._record_transform_starts(batches)
            return [self._record_task(batch, budget) for batch in batches]

    def _record_transform_starts(self, batches: Sequence[TaskOutcomes]) -> None:
        rows = [
            (b.node_type, b.where.host, b.where.worker, b.where.pool, b.where.block, *start)
            for b in batches
            for start in ((t.started, t.init_seconds, int(t.restart)) for t in b.transform_starts)
        ]
        if rows:
            self._conn.executemany(_INSERT_TRANSFORM, rows)

    def _record_task(self, batch: TaskOutcomes, budget: RetryBudget) -> list[RangeState | None]:
        results = batch.results
        rows = getattr(results, "rows", None)  # a reply's plain tuples (``ResultRows``)
        if rows is not None and all(row[2] is _DONE for row in rows):  # the hot path
            task = self._insert_task(batch)
            cursor = self._conn.executemany(
                _MARK_DONE, [(task, *row[3:9], row[0], row[1]) for row in rows]
            )
            if cursor.rowcount == len(rows):
                return [RangeState.DONE] * len(rows)
            applied = self._applied(task, results)
            return [RangeState.DONE if ok else None for ok in applied]
        done: list[int] = []
        others: list[int] = []
        for i, r in enumerate(results):
            (done if r.outcome is Outcome.DONE else others).append(i)
        if not others:  # the hot path: a task whose ranges all succeeded
            applied = self._apply_successes(self._insert_task(batch), results)
            return [RangeState.DONE if ok else None for ok in applied]
        states: list[RangeState | None] = [None] * len(results)
        if done:
            task = self._insert_task(batch)
            applied = self._apply_successes(task, [results[i] for i in done])
            for i, ok in zip(done, applied, strict=True):
                states[i] = RangeState.DONE if ok else None
        w = batch.where
        self._conn.executemany(
            _INSERT_ATTEMPT,
            [
                (
                    r.index,
                    r.attempt,
                    r.outcome.value,
                    batch.node_type,
                    w.host,
                    w.worker,
                    w.slurm_job,
                    w.accelerator,
                    r.started,
                    r.finished,
                    r.error,
                )
                for r in (results[i] for i in others)
            ],
        )
        for i in others:
            r = results[i]
            if r.outcome in _MOVING:
                states[i] = self._apply_failure(r, w, budget)
            elif r.outcome is not Outcome.LATE:
                raise ValueError(f"range {r.index}: outcome {r.outcome} is not a result to record")
        return states

    def _insert_task(self, batch: TaskOutcomes) -> int:
        w = batch.where
        cursor = self._conn.execute(
            _INSERT_TASK,
            (
                batch.node_type,
                w.host,
                w.worker,
                w.slurm_job,
                w.accelerator,
                w.pool,
                w.block,
                time.time(),
                batch.setup_seconds,
            ),
        )
        return int(cursor.lastrowid)

    def _apply_successes(self, task: int, results: Sequence[RangeResult]) -> list[bool]:
        """Mark ranges done in one batched UPDATE; say which were applied (not stale)."""
        rows = [
            (
                task,
                r.started,
                r.finished,
                r.output,
                r.size,
                r.checksum,
                r.n_events,
                r.index,
                r.attempt,
            )
            for r in results
        ]
        cursor = self._conn.executemany(_MARK_DONE, rows)
        if cursor.rowcount == len(rows):
            return [True] * len(rows)
        return self._applied(task, results)

    def _applied(self, task: int, results: Sequence[RangeResult]) -> list[bool]:
        """Which successes of ``task`` took effect (some matched no running attempt:
        late results)."""
        found = {
            r[0]: r
            for r in self._conn.execute(
                f"SELECT idx, attempts, state, task FROM ranges WHERE idx IN "
                f"({','.join('?' * len(results))})",
                [r.index for r in results],
            )
        }
        return [
            (now := found.get(r.index)) is not None
            and (now[1], now[2], now[3]) == (r.attempt, "done", task)
            for r in results
        ]

    def _apply_failure(self, r: RangeResult, w: Where, budget: RetryBudget) -> RangeState | None:
        """Move a running range to failed or fatal; ``None`` if the attempt is not current."""
        row = self._conn.execute(
            "SELECT state, attempts, failures, lost FROM ranges WHERE idx=?", (r.index,)
        ).fetchone()
        if row is None or row[0] != RangeState.RUNNING or row[1] != r.attempt:
            return None
        state, counts = after_outcome(r.outcome, AttemptCounts(row[2], row[3]), budget)
        self._conn.execute(
            _MARK_FAILED,
            (
                state.value,
                counts.failures,
                counts.lost,
                r.error,
                r.finished,
                w.host,
                w.worker,
                w.slurm_job,
                w.accelerator,
                r.index,
                r.attempt,
            ),
        )
        return state
