"""Merge transitions, validation verdicts and the campaign's end.

A merge attempt may be given up on (its worker lost) and started again while
the old attempt still runs: only the merge's current attempt may be recorded,
so an old attempt's late file or failure changes nothing.
"""

from __future__ import annotations

import json
import time

from parsl_es.ledger.core import LedgerCore
from parsl_es.records import CampaignVerdict, MergedFile, MergeVerdict, Plots, Where
from parsl_es.states import Verdict

_CURRENT = "group_idx=? AND state='running' AND attempts=?"


class MergeWrites(LedgerCore):
    """The merge and validation transitions the engine makes."""

    def start_merge(self, group: int, node_type: str, now: float) -> int:
        """Mark a waiting or failed merge running; return its attempt number."""
        with self.transaction() as conn:
            row = conn.execute(
                "UPDATE merges SET state='running', attempts=attempts+1, node_type=?, started=?, "
                "finished=NULL, error=NULL WHERE group_idx=? AND state IN ('waiting','failed') "
                "RETURNING attempts",
                (node_type, now, group),
            ).fetchone()
        if row is None:
            raise RuntimeError(f"merge group {group} is not waiting; cannot start it")
        return row[0]

    def merge_is_current(self, group: int, attempt: int) -> bool:
        """Whether ``attempt`` is the merge's running attempt (not one given up on)."""
        row = self._conn.execute(f"SELECT 1 FROM merges WHERE {_CURRENT}", (group, attempt))
        return row.fetchone() is not None

    def finish_merge(self, merged: MergedFile) -> bool:
        """Record a merged file (already on disk): its ranges are merged from now on.

        Only for the merge's current attempt; otherwise nothing changes and the
        answer is False. The ranges' rows are not written: a done range of a done
        merge is merged (``schema.RANGE_INFO``), which saves a write per range.
        """
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE merges SET state='done', host=?, worker=?, started=?, finished=?, "
                "duration=?, output=?, size=?, checksum=?, n_events=?, error=NULL "
                f"WHERE {_CURRENT}",
                (
                    merged.where.host,
                    merged.where.worker,
                    merged.started,
                    merged.finished,
                    merged.finished - merged.started,
                    merged.output,
                    merged.size,
                    merged.checksum,
                    merged.n_events,
                    merged.group,
                    merged.attempt,
                ),
            )
            return cursor.rowcount > 0

    def fail_merge(self, group: int, attempt: int, error: str, now: float) -> bool:
        """Record a merge attempt's failure; False (nothing changed) if it is not current."""
        with self.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE merges SET state='failed', error=?, finished=? WHERE {_CURRENT}",
                (error, now, group, attempt),
            )
            return cursor.rowcount > 0

    def record_verdict(self, verdict: MergeVerdict) -> None:
        """The verdict on one merged file, with where and when it was checked."""
        with self.transaction():
            self._set_validation(
                verdict.group,
                Verdict.PASSED if verdict.passed else Verdict.FAILED,
                "; ".join(verdict.problems) or None,
                verdict.finished if verdict.finished is not None else time.time(),
                verdict.where,
                verdict.started,
            )

    def record_campaign_verdict(self, verdict: CampaignVerdict) -> None:
        """The campaign-wide proof: bad merged files marked failed (resume redoes them)."""
        now = time.time()
        with self.transaction():
            for group, problem in verdict.bad_groups.items():
                self._set_validation(group, Verdict.FAILED, problem, now, Where(), None)
            if verdict.started is not None:
                self._set_meta("campaign_validation_run", _run_json(verdict.where, verdict))
            passed = Verdict.PASSED if verdict.passed else Verdict.FAILED
            self._set_meta("campaign_validation", passed.value)

    def record_plots_run(self, plots: Plots) -> None:
        """Where and when the campaign's physics plots were drawn (for the report)."""
        self.set_meta("campaign_plots_run", _run_json(plots.where, plots))

    def _set_validation(
        self,
        group: int,
        verdict: Verdict,
        error: str | None,
        at: float,
        where: Where,
        started: float | None,
    ) -> None:
        self._conn.execute(
            "UPDATE merges SET validation=?, validated_at=?, validation_error=?, "
            "validation_worker=?, validation_started=? WHERE group_idx=?",
            (verdict.value, at, error, where.worker, started, group),
        )


def _run_json(where: Where, run: CampaignVerdict | Plots) -> str:
    return json.dumps({"worker": where.worker, "started": run.started, "finished": run.finished})
