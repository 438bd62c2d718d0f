"""Event-range results: record what their attempts came to (their starts: ``starts.py``).

Only ranges that were ever dispatched have a row: a range without one is
``ready`` by definition (its numbers follow from the campaign). Every call is
one transaction. A range becomes ``done`` only with its output already complete
on disk, its checksum and event count recorded. What a failed attempt does to
its range is decided by ``states.after_outcome`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from parsl_es.ledger.core import checked_states
from parsl_es.ledger.starts import RangeStarts
from parsl_es.records import RangeResult, TaskOutcomes, Where
from parsl_es.states import AttemptCounts, Outcome, RangeState, RetryBudget, after_outcome

#: The ranges of merge group ``?`` (twice), by primary key: no scan of the whole table.
IN_GROUP = (
    "idx BETWEEN (SELECT first_range FROM merges WHERE group_idx=?) "
    "AND (SELECT last_range FROM merges WHERE group_idx=?)"
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


_DONE = Outcome.DONE
#: Outcomes that move a running range (to failed or fatal) through ``after_outcome``.
_MOVING = frozenset({Outcome.FAILED, Outcome.FATAL, Outcome.LOST, Outcome.TIMEOUT})


class RangeWrites(RangeStarts):
    """The range transitions the engine makes: starts (``RangeStarts``) and results."""

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
