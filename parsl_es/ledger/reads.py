"""What the ledger says, as typed read models: ranges, attempts, merges, resume state.

Everyone outside this package reads the ledger through these (the driver on
resume, ``es-run status``, the report, notebooks, tests); no SQL elsewhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

from parsl_es.ledger import migrations
from parsl_es.ledger.core import LedgerCore
from parsl_es.ledger.models import (
    ATTEMPT_COLUMNS,
    MERGE_COLUMNS,
    RANGE_COLUMNS,
    TASK_COLUMNS,
    AttemptRow,
    RangeRow,
    ResumeState,
    TaskRow,
    attempt_row,
    merge_record,
    merge_row,
    range_row,
)
from parsl_es.ledger.schema import OPEN_RANGES
from parsl_es.ranges import MergeGroup
from parsl_es.records import MergeRecord
from parsl_es.states import MergeState, Outcome, RangeState, Verdict


class LedgerReads(LedgerCore):
    """Typed reads of a ledger (works read-only, also on an older ledger)."""

    def _tuples(self, sql: str, params: Iterable[object] = ()) -> sqlite3.Cursor:
        cursor = self._conn.execute(sql, tuple(params))
        cursor.row_factory = None  # plain tuples: thousands of rows
        return cursor

    def ranges(self, states: Iterable[RangeState] | None = None) -> Iterator[RangeRow]:
        """Dispatched ranges (in a state of ``states``, or all), in index order."""
        sql = f"SELECT {RANGE_COLUMNS} FROM range_info"
        params: tuple[str, ...] = ()
        if states is not None:
            params = tuple(RangeState(s).value for s in states)
            sql += f" WHERE state IN ({','.join('?' * len(params))})"
        for t in self._tuples(sql + " ORDER BY idx", params):
            yield range_row(t)

    def attempts(
        self, outcomes: Iterable[Outcome] | None = None, index: int | None = None
    ) -> list[AttemptRow]:
        """Recorded attempts (of one range, with one of ``outcomes``), by range and attempt."""
        where, params = [], []
        if outcomes is not None:
            values = [Outcome(o).value for o in outcomes]
            where.append(f"outcome IN ({','.join('?' * len(values))})")
            params += values
        if index is not None:
            where.append("range_idx=?")
            params.append(index)
        sql = f"SELECT {ATTEMPT_COLUMNS} FROM attempts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._tuples(sql + " ORDER BY range_idx, attempt, rowid", params)
        return [attempt_row(t) for t in rows]

    def tasks(self) -> list[TaskRow]:
        """Tasks that recorded finished ranges, in the order they were recorded."""
        return [
            TaskRow(*t) for t in self._tuples(f"SELECT {TASK_COLUMNS} FROM tasks ORDER BY task")
        ]

    def merge_records(self) -> list[MergeRecord]:
        rows = self._tuples(f"SELECT {MERGE_COLUMNS} FROM merges ORDER BY group_idx")
        return [merge_row(t) for t in rows]

    def merge_record(self, group: int) -> MergeRecord:
        row = self._conn.execute("SELECT * FROM merges WHERE group_idx=?", (group,)).fetchone()
        if row is None:
            raise KeyError(f"no merge group {group} in the ledger")
        return merge_record(row)

    def group_range_outputs(self, group: MergeGroup) -> list[tuple[int, str, str]]:
        """``(index, output, checksum)`` of the group's done ranges, in event order."""
        return self._tuples(
            "SELECT idx, output, checksum FROM ranges WHERE idx BETWEEN ? AND ? "
            "AND state IN ('done','merged') ORDER BY idx",
            (group.first_range, group.last_range),
        ).fetchall()

    def touched(self, first: int, last: int) -> set[int]:
        """Indices of ranges ``first..last`` that have a row (were ever started)."""
        rows = self._tuples("SELECT idx FROM ranges WHERE idx BETWEEN ? AND ?", (first, last))
        return {t[0] for t in rows}

    def campaign_passed(self) -> bool:
        return self.meta("campaign_validation") == Verdict.PASSED

    @property
    def _tallied(self) -> bool:
        """Whether the file has version 5's index and counts of merged ranges.

        An older ledger opened read-only has not (it is shown as it is, not migrated):
        its reads visit every range, as they always did.
        """
        return migrations.version(self._conn) >= 5  # type: ignore[arg-type]

    def resume_state(self) -> ResumeState:
        """Where a resumed driver carries on, without a Python object per range.

        The retry list and the counts of done ranges come from the ranges not merged
        (those of the open merge groups, ``schema.OPEN_RANGES``); merged ranges are
        counted per merge group by ``merged_tally``.
        """
        if not self._tallied:
            return self._resume_state_scan()
        top = self._conn.execute("SELECT MAX(idx) FROM ranges").fetchone()[0]
        retry = self._tuples(
            f"SELECT r.idx {OPEN_RANGES} AND r.state IN ('ready','failed') ORDER BY r.idx"
        )
        per_group = self._tuples(
            "SELECT r.merge_group, COUNT(*), COALESCE(SUM(r.n_events), 0) "
            f"{OPEN_RANGES} AND r.state = 'done' GROUP BY r.merge_group"
        ).fetchall()
        merged = self._conn.execute(
            "SELECT COALESCE(SUM(ranges), 0), COALESCE(SUM(events), 0) FROM merged_tally"
        ).fetchone()
        return self._resume(top, retry, per_group, merged)

    def _resume(
        self,
        top: int | None,
        retry: Iterable[tuple],
        per_group: list[tuple[int, int, int]],
        merged: tuple[int, int] = (0, 0),
    ) -> ResumeState:
        """``ResumeState`` from the ranges' reads (``merged``: ranges and events of the
        done groups, when ``per_group`` holds the unmerged ranges only)."""
        merges, merges_done, merges_validated = self._merge_state()
        open_groups = {m.group for m in merges if m.state is not MergeState.DONE}
        return ResumeState(
            cursor=0 if top is None else top + 1,
            retry=tuple(t[0] for t in retry),
            done_per_group={g: n for g, n, _ in per_group if g in open_groups},
            events_done=sum(e for _, _, e in per_group) + merged[1],
            ranges_done=sum(n for _, n, _ in per_group) + merged[0],
            campaign_validated=self.campaign_passed(),
            merges=merges,
            merges_done=merges_done,
            merges_validated=merges_validated,
        )

    def _merge_state(self) -> tuple[tuple[MergeRecord, ...], int, int]:
        """The open merge groups' records, the done ones and the passed ones counted."""
        done, passed = self._conn.execute(
            "SELECT COALESCE(SUM(state = 'done'), 0), "
            "COALESCE(SUM(state = 'done' AND validation = 'passed'), 0) FROM merges"
        ).fetchone()
        rows = self._tuples(
            f"SELECT {MERGE_COLUMNS} FROM merges WHERE state != 'done' "
            "OR validation IS NULL OR validation != 'passed' ORDER BY group_idx"
        )
        return tuple(merge_row(t) for t in rows), done, passed

    def passed_groups(self) -> Iterator[int]:
        """Merge groups merged and validated as passed, in order (a later chain step's
        input files that passed), without a record per group."""
        rows = self._conn.execute(
            "SELECT group_idx FROM merges WHERE state = 'done' AND validation = 'passed' "
            "ORDER BY group_idx"
        )
        return (g for (g,) in rows)

    def _resume_state_scan(self) -> ResumeState:
        """``resume_state`` of a ledger before version 5 (every range visited)."""
        top = self._conn.execute("SELECT MAX(idx) FROM ranges").fetchone()[0]
        retry = self._tuples(
            "SELECT idx FROM ranges WHERE state IN ('ready','failed') ORDER BY idx"
        )
        per_group = self._tuples(
            "SELECT merge_group, COUNT(*), COALESCE(SUM(n_events), 0) FROM ranges "
            "WHERE state IN ('done','merged') GROUP BY merge_group"
        ).fetchall()
        return self._resume(top, retry, per_group)
