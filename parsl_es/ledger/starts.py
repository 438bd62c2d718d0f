"""Starting event ranges: the ledger rows of ranges as they go out to workers.

A range never started has no row. Fresh ranges (past the feed's cursor) are
inserted as spans of consecutive indices, numbered by SQLite, with nothing done
per range in Python; retries go one by one, and only a ready or failed range
may start again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence

from parsl_es.ledger.core import LedgerCore, checked_states
from parsl_es.ranges import RangePlan

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
#: ``(node type, indices)``: the ranges of one task, as the engine starts them.
StartedBundle = tuple[str, Sequence[int]]
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


class RangeStarts(LedgerCore):
    """Ranges marked running as the engine starts them, bundle by bundle."""

    def start_ranges(
        self, bundles: Sequence[StartedBundle], now: float, fresh_from: int
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
