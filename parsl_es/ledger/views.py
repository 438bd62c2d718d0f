"""What ``es-run status``, the campaign report and notebooks read: counts and timelines.

The engine's own reads (resume, merge inputs) are ``reads.LedgerReads``; these
are the views of a whole campaign, each a few queries that visit no range twice.
"""

from __future__ import annotations

import json

from parsl_es.ledger.models import (
    ATTEMPT_COLUMNS,
    MERGE_STATES,
    RANGE_COLUMNS,
    RANGE_STATES,
    TASK_COLUMNS,
    TRANSFORM_COLUMNS,
    ReportRows,
    Run,
    Summary,
    TaskRow,
    TransformRow,
    attempt_row,
    range_row,
)
from parsl_es.ledger.reads import LedgerReads
from parsl_es.ledger.schema import OPEN_RANGES, open_ranges

#: Per node type, the done and merged ranges: count, events, distinct hosts and batch
#: jobs, mean duration. Merged ranges come from the merge groups' counts (version 5),
#: the done ones from the open merge groups (``schema.OPEN_RANGES``, through the view).
_BY_NODE_TYPE = f"""
WITH done AS (
    SELECT r.node_type, r.n_events, r.host, r.slurm_job, r.duration
    {open_ranges("range_info")} AND r.state = 'done'
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


class CampaignViews(LedgerReads):
    """A campaign's counts (``summary``) and what its report draws (``report_rows``)."""

    def summary(self) -> Summary:
        """Counts for progress and ``es-run status``.

        From version 5 on, no query visits every range: the ranges not merged are
        counted through the open merge groups, the merged ones from ``merged_tally``
        (see ``schema``), the merge groups (at most 100,000 rows) in one pass.
        """
        plan = self.plan
        ranges = dict.fromkeys(RANGE_STATES, 0)
        merged_sql = "SELECT 'merged', COALESCE(SUM(ranges), 0) FROM merged_tally"
        if self._tallied:
            ranges.update(self._tuples(f"SELECT r.state, COUNT(*) {OPEN_RANGES} GROUP BY r.state"))
            ranges.update(self._tuples(merged_sql))
            done = self._conn.execute(
                f"SELECT (SELECT COALESCE(SUM(r.n_events), 0) {OPEN_RANGES} "
                "AND r.state = 'done') "
                "+ (SELECT COALESCE(SUM(events), 0) FROM merged_tally)"
            ).fetchone()[0]
        else:
            ranges.update(self._tuples("SELECT state, COUNT(*) FROM range_info GROUP BY state"))
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
