"""What the ledger says, as typed read models: ranges, attempts, merges, counts.

Everyone outside this package reads the ledger through these (the driver on
resume, ``es-run status``, the report, notebooks, tests); no SQL elsewhere.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator

from parsl_es.ledger import schema
from parsl_es.ledger.core import LedgerCore
from parsl_es.ledger.models import (
    ATTEMPT_COLUMNS,
    MERGE_COLUMNS,
    MERGE_STATES,
    RANGE_COLUMNS,
    RANGE_STATES,
    TASK_COLUMNS,
    TRANSFORM_COLUMNS,
    AttemptRow,
    RangeRow,
    ReportRows,
    ResumeState,
    Run,
    Summary,
    TaskRow,
    TransformRow,
    attempt_row,
    merge_record,
    merge_row,
    range_row,
)
from parsl_es.ranges import MergeGroup
from parsl_es.records import MergeRecord
from parsl_es.states import MergeState, Outcome, RangeState, Verdict

#: Per node type, the done and merged ranges: count, events, distinct hosts and batch
#: jobs, mean duration. Merged ranges come from the merge groups' counts (version 5),
#: the done ones from the partial index of unmerged ranges.
_BY_NODE_TYPE = """
WITH done AS (
    SELECT node_type, n_events, host, slurm_job, duration FROM range_info
    WHERE state != 'merged' AND state = 'done'
),
counts(node_type, n, events, timed, seconds) AS (
    SELECT node_type, COUNT(*), COALESCE(SUM(n_events), 0), COUNT(duration),
        COALESCE(SUM(duration), 0) FROM done GROUP BY node_type
    UNION ALL
    SELECT node_type, SUM(ranges), SUM(events), SUM(timed), SUM(seconds) FROM merged_tally
    GROUP BY node_type
),
places(node_type, kind, name) AS (
    SELECT COALESCE(node_type, ''), 'host', host FROM done WHERE host IS NOT NULL
    UNION SELECT COALESCE(node_type, ''), 'job', slurm_job FROM done WHERE slurm_job IS NOT NULL
    UNION SELECT node_type, kind, name FROM merged_where
)
SELECT c.node_type, SUM(c.n), SUM(c.events),
    (SELECT COUNT(*) FROM places p WHERE p.node_type = COALESCE(c.node_type, '')
        AND p.kind = 'host'),
    (SELECT COUNT(*) FROM places p WHERE p.node_type = COALESCE(c.node_type, '')
        AND p.kind = 'job'),
    SUM(c.seconds) / NULLIF(SUM(c.timed), 0)
FROM counts c GROUP BY c.node_type HAVING SUM(c.n) > 0 ORDER BY c.node_type
"""
#: The same for a ledger before version 5: every done or merged range visited.
_BY_NODE_TYPE_SCAN = (
    "SELECT node_type, COUNT(*), COALESCE(SUM(n_events), 0), COUNT(DISTINCT host), "
    "COUNT(DISTINCT slurm_job), AVG(duration) FROM range_info "
    "WHERE state IN ('done','merged') GROUP BY node_type ORDER BY node_type"
)


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
        return schema.version(self._conn) >= 5  # type: ignore[arg-type]

    def resume_state(self) -> ResumeState:
        """Where a resumed driver carries on, without a Python object per range.

        The retry list and the counts of done ranges come from the ranges not merged
        (the partial index ``ranges_unmerged``); merged ranges are counted per merge
        group by ``merged_tally``.
        """
        if not self._tallied:
            return self._resume_state_scan()
        top = self._conn.execute("SELECT MAX(idx) FROM ranges").fetchone()[0]
        retry = self._tuples(
            "SELECT idx FROM ranges WHERE state != 'merged' AND state IN ('ready','failed') "
            "ORDER BY idx"
        )
        per_group = self._tuples(
            "SELECT merge_group, COUNT(*), COALESCE(SUM(n_events), 0) FROM ranges "
            "WHERE state != 'merged' AND state = 'done' GROUP BY merge_group"
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

    def summary(self) -> Summary:
        """Counts for progress and ``es-run status``.

        From version 5 on, no query visits every range: the ranges not merged are
        counted through ``ranges_unmerged``, the merged ones from ``merged_tally``
        (see ``schema``), the merge groups (at most 100,000 rows) in one pass.
        """
        plan = self.plan
        ranges = dict.fromkeys(RANGE_STATES, 0)
        merged_sql = "SELECT 'merged', COALESCE(SUM(ranges), 0) FROM merged_tally"
        if self._tallied:
            ranges.update(
                self._tuples(
                    "SELECT state, COUNT(*) FROM ranges WHERE state != 'merged' GROUP BY state"
                )
            )
            ranges.update(self._tuples(merged_sql))
            done = self._conn.execute(
                "SELECT (SELECT COALESCE(SUM(n_events), 0) FROM ranges "
                "WHERE state != 'merged' AND state = 'done') "
                "+ (SELECT COALESCE(SUM(events), 0) FROM merged_tally)"
            ).fetchone()[0]
        else:
            ranges.update(self._tuples("SELECT state, COUNT(*) FROM ranges GROUP BY state"))
            done = self._conn.execute(
                "SELECT COALESCE(SUM(n_events), 0) FROM ranges WHERE state IN ('done','merged')"
            ).fetchone()[0]
        ranges["ready"] += plan.n_ranges - sum(ranges.values())
        merges = dict.fromkeys(MERGE_STATES, 0)
        validated = {"passed": 0, "failed": 0}
        merged = 0
        for state, validation, n, events in self._tuples(
            "SELECT state, validation, COUNT(*), COALESCE(SUM(n_events), 0) FROM merges "
            "GROUP BY state, validation"
        ):
            merges[state] += n
            if validation is not None:
                validated[validation] = validated.get(validation, 0) + n
            if state == "done":
                merged += events
        return Summary(
            n_ranges=plan.n_ranges,
            n_merges=plan.n_merges,
            events_total=plan.events,
            ranges=ranges,
            merges=merges,
            validated=validated,
            events_done=done,
            events_merged=merged,
            campaign_validation=self.meta("campaign_validation"),
            by_node_type=self._by_node_type(),
            transforms=self._transforms(),
        )

    def _by_node_type(self) -> dict[str, dict[str, float]]:
        """How the simulated ranges were shared between node types."""
        out: dict[str, dict[str, float]] = {}

        def share(node_type: str | None) -> dict[str, float]:
            zero = ("ranges", "events", "hosts", "batch_jobs", "mean_range_seconds")
            return out.setdefault(
                node_type or "?", dict.fromkeys((*zero, "lost_attempts", "failed_attempts"), 0)
            )

        for nt, n, events, hosts, jobs, mean in self._tuples(
            _BY_NODE_TYPE if self._tallied else _BY_NODE_TYPE_SCAN
        ):
            share(nt).update(
                ranges=n,
                events=events,
                hosts=hosts,
                batch_jobs=jobs,
                mean_range_seconds=round(mean or 0.0, 3),
            )
        for nt, outcome, n in self._tuples(
            "SELECT node_type, outcome, COUNT(*) FROM attempts "
            "WHERE outcome IN ('lost','failed','fatal') GROUP BY node_type, outcome"
        ):
            share(nt)["lost_attempts" if outcome == "lost" else "failed_attempts"] += n
        return out

    def report_rows(self) -> ReportRows:
        """Everything the campaign report draws."""
        ranges = self._tuples(
            f"SELECT {RANGE_COLUMNS} FROM range_info WHERE state IN ('done','merged') "
            "ORDER BY started"
        )
        tasks = self._tuples(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE setup IS NOT NULL AND setup > 0 ORDER BY task"
        )
        attempts = self._tuples(
            f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE outcome NOT IN ('done','late') "
            "ORDER BY finished"
        )
        merge_runs = self._tuples(
            "SELECT COALESCE(worker, host), started, finished FROM merges WHERE state='done' "
            "ORDER BY group_idx"
        )
        validations = self._tuples(
            "SELECT validation_worker, validation_started, validated_at FROM merges "
            "ORDER BY group_idx"
        )
        runs = [Run(*t) for t in validations]
        for key in ("campaign_validation_run", "campaign_plots_run"):
            if (raw := self.meta(key)) is not None:
                v = json.loads(raw)
                runs.append(Run(v.get("worker"), v.get("started"), v.get("finished")))
        return ReportRows(
            ranges=tuple(range_row(t) for t in ranges),
            tasks=tuple(TaskRow(*t) for t in tasks),
            attempts=tuple(attempt_row(t) for t in attempts),
            merges=tuple(self.merge_records()),
            merge_runs=tuple(Run(*t) for t in merge_runs),
            validation_runs=tuple(runs),
            transforms=self.transform_starts(),
        )

    def transform_starts(self) -> tuple[TransformRow, ...]:
        rows = self._tuples(f"SELECT {TRANSFORM_COLUMNS} FROM transforms ORDER BY started")
        return tuple(TransformRow(w, nt, s, i, bool(r)) for w, nt, s, i, r in rows)

    def _transforms(self) -> dict[str, dict[str, float]]:
        """Per worker: transform starts, restarts and initialisation seconds (total, mean)."""
        out = {}
        for worker, starts, restarts, init, mean in self._tuples(
            "SELECT COALESCE(worker, '?'), COUNT(*), SUM(restart), COALESCE(SUM(init_seconds), 0), "
            "AVG(init_seconds) FROM transforms GROUP BY worker ORDER BY worker"
        ):
            out[worker] = {
                "starts": starts,
                "restarts": restarts,
                "init_seconds": round(init, 3),
                "mean_init_seconds": round(mean or 0.0, 3),
            }
        return out
