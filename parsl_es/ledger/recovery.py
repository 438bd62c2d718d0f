"""Sending work back to be redone: damaged range files, and a stopped driver's leftovers."""

from __future__ import annotations

import os
from pathlib import Path

from parsl_es.ledger.core import LedgerCore
from parsl_es.ledger.ranges import IN_GROUP
from parsl_es.ledger.schema import OPEN_RANGES
from parsl_es.states import Outcome


class Recovery(LedgerCore):
    """Transitions back to ``ready``/``waiting``: never counted as failures."""

    def redo_damaged(self, problems: dict[int, str], now: float) -> list[int]:
        """Send done ranges whose files are damaged back to be simulated again.

        Recorded as a ``damaged`` attempt outcome; not counted as a failure.
        Returns the ranges actually reset.
        """
        reset = []
        with self.transaction() as conn:
            for idx, problem in problems.items():
                row = conn.execute(
                    "UPDATE ranges SET state='ready', output=NULL, size=NULL, checksum=NULL, "
                    "error=? WHERE idx=? AND state IN ('done','merged') RETURNING attempts, "
                    "node_type",
                    (problem, idx),
                ).fetchone()
                if row is None:
                    continue
                conn.execute(
                    "INSERT INTO attempts (range_idx, attempt, outcome, node_type, finished, "
                    "error) VALUES (?, ?, ?, ?, ?, ?)",
                    (idx, row[0], Outcome.DAMAGED.value, row[1], now, problem),
                )
                reset.append(idx)
        return reset

    def reset_for_resume(self, output_dir: Path) -> dict[str, int]:
        """Undo what a stopped driver left in flight, and distrust missing files.

        Running ranges and merges go back to be redone (their workers are gone);
        a done range or merge whose file is missing or has the wrong size is
        redone too; fatal ranges get a new budget. Returns counts of what was reset.

        What is checked on disk, and why that is enough for exactly-once: a
        merged range's events are in its group's merged file, which is what the
        campaign delivers and what the validations read; its own range file is
        read by nothing any more, so it is not looked at (at 10^7 ranges that
        would be 10^7 ``stat`` calls). Every done merge's file is checked (at most
        one per merge group): if it is missing or the wrong size, the merge goes
        back to waiting and its ranges back to done, and then their range files
        are checked like every other done range's, below. A done range whose file
        is missing or the wrong size is simulated again before its group merges.
        The ranges not merged are found through the open merge groups
        (``schema.OPEN_RANGES``), not by visiting every range.
        """
        counts = dict.fromkeys(
            (
                "ranges_running",
                "ranges_missing",
                "merges_running",
                "merges_missing",
                "fatal_retried",
            ),
            0,
        )
        out = os.fspath(output_dir)
        with self.transaction() as conn:
            counts["ranges_running"] = conn.execute(
                "UPDATE ranges SET state='ready' WHERE idx IN "
                f"(SELECT r.idx {OPEN_RANGES} AND r.state='running')"
            ).rowcount
            counts["fatal_retried"] = conn.execute(
                "UPDATE ranges SET state='ready', failures=0 WHERE idx IN "
                f"(SELECT r.idx {OPEN_RANGES} AND r.state='fatal')"
            ).rowcount
            counts["merges_running"] = conn.execute(
                "UPDATE merges SET state='waiting' WHERE state IN ('running','failed')"
            ).rowcount
            # Streamed, not fetched: 10^5 merge rows held at once made a resume's memory
            # grow with the campaign. Only what must be redone is kept, then moved.
            missing_merges = [
                m["group_idx"]
                for m in conn.execute(
                    "SELECT group_idx, output, size, validation FROM merges WHERE state='done'"
                )
                if m["validation"] == "failed" or not _file_ok(out, m["output"], m["size"])
            ]
            for group in missing_merges:
                conn.execute(
                    "UPDATE merges SET state='waiting', output=NULL, size=NULL, checksum=NULL, "
                    "validation=NULL WHERE group_idx=?",
                    (group,),
                )
                conn.execute(
                    f"UPDATE ranges SET state='done' WHERE {IN_GROUP} AND state='merged'",
                    (group, group),
                )
            counts["merges_missing"] = len(missing_merges)
            missing_ranges = [
                (r["idx"],)
                for r in conn.execute(
                    f"SELECT r.idx, r.output, r.size {OPEN_RANGES} AND r.state='done'"
                )
                if not _file_ok(out, r["output"], r["size"])
            ]
            conn.executemany("UPDATE ranges SET state='ready' WHERE idx=?", missing_ranges)
            counts["ranges_missing"] = len(missing_ranges)
            unproven = conn.execute(
                "SELECT COUNT(*) FROM merges WHERE state != 'done' OR validation IS NOT 'passed'"
            ).fetchone()[0]
            if unproven:  # an earlier campaign validation no longer speaks for the outputs
                self._delete_meta("campaign_validation")
        return counts


def _file_ok(output_dir: Path | str, rel: str | None, size: int | None) -> bool:
    """Whether ``output_dir/rel`` is there with ``size`` bytes (plain strings: a resume
    may look at 10^5 files, and ``pathlib`` costs several times the ``stat``)."""
    if not rel:
        return False
    try:
        return os.stat(os.path.join(output_dir, rel)).st_size == size
    except OSError:
        return False
