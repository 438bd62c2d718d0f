"""The campaign ledger: durable state of every event range and merge, in SQLite.

It is the source of truth for ``resume`` and ``status``. Only ranges that were
ever dispatched have a row: a range without one is ``ready`` by definition (its
numbers follow from the campaign), so a campaign of millions of events costs
nothing until it runs. Every transition is one transaction; a range becomes
``done`` only with its output already complete on disk and its checksum and
event count recorded.

Range states: ready -> running -> done -> merged, plus failed (will be retried)
and fatal (permanent, or out of attempts). Merge states: waiting -> running ->
done, plus failed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parsl_es.crashpoints import crash_point
from parsl_es.errors import UserError
from parsl_es.fileio import fsync_dir, temp_path_for
from parsl_es.ranges import EventRange, MergeGroup, RangePlan

SCHEMA_VERSION = 1
LEDGER_NAME = "ledger.sqlite"
RANGE_STATES = ("ready", "running", "done", "merged", "failed", "fatal")
MERGE_STATES = ("waiting", "running", "done", "failed")
#: Lost attempts (a worker or node died) do not count as payload failures, but a
#: range that keeps killing its workers is stopped after this many times its
#: attempt limit.
LOST_FACTOR = 3

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ranges (
    idx INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    first_event INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    merge_group INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('ready','running','done','merged','failed','fatal')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    started REAL, finished REAL, duration REAL,
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER,
    error TEXT
);
CREATE INDEX ranges_state ON ranges (state);
CREATE INDEX ranges_group ON ranges (merge_group);
CREATE TABLE attempts (
    range_idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    started REAL, finished REAL, error TEXT
);
CREATE INDEX attempts_range ON attempts (range_idx);
CREATE TABLE merges (
    group_idx INTEGER PRIMARY KEY,
    first_range INTEGER NOT NULL,
    last_range INTEGER NOT NULL,
    first_event INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('waiting','running','done','failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    node_type TEXT, host TEXT, started REAL, finished REAL, duration REAL,
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER, error TEXT,
    validation TEXT CHECK (validation IN ('passed','failed')),
    validated_at REAL, validation_error TEXT
);
"""


@dataclass(frozen=True, slots=True)
class RangeOutcome:
    """What one attempt of one range came to, as the driver records it."""

    index: int
    attempt: int
    outcome: str  # done | failed | lost | timeout | fatal | late
    node_type: str | None = None
    host: str | None = None
    worker: str | None = None
    slurm_job: str | None = None
    accelerator: str | None = None
    started: float | None = None
    finished: float | None = None
    output: str | None = None
    size: int | None = None
    checksum: str | None = None
    n_events: int | None = None
    error: str | None = None


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

    @property
    def complete(self) -> bool:
        return (
            self.merges.get("done", 0) == self.n_merges
            and self.validated.get("passed", 0) == self.n_merges
            and self.campaign_validation == "passed"
        )


class Ledger:
    """One campaign's SQLite ledger. Owned by one driver; readable by anyone."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._plan: RangePlan | None = None

    # --- opening -----------------------------------------------------------
    @classmethod
    def create(cls, path: Path, meta: dict[str, str], plan: RangePlan) -> Ledger:
        """Create the ledger atomically: fully initialised, or not there at all."""
        if path.exists():
            raise UserError("a ledger already exists here", file=path)
        tmp = temp_path_for(path)
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_SCHEMA)
            with conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created", str(time.time())),
                        *meta.items(),
                    ],
                )
                conn.executemany(
                    "INSERT INTO merges (group_idx, first_range, last_range, first_event, "
                    "last_event, state) VALUES (?, ?, ?, ?, ?, 'waiting')",
                    (
                        (g.index, g.first_range, g.last_range, g.first_event, g.last_event)
                        for g in (plan.group(i) for i in range(plan.n_merges))
                    ),
                )
            conn.close()
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            conn.close()
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> Ledger:
        if not path.is_file():
            raise UserError("no campaign ledger here (expected ledger.sqlite)", file=path)
        uri = f"file:{path}?mode={'ro' if readonly else 'rw'}"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"not a parsl-es ledger: {exc}", file=path) from None
        return cls(path, conn)

    def close(self) -> None:
        self.conn.close()

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn)

    # --- metadata ----------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def campaign_json(self) -> dict[str, Any]:
        raw = self.meta("campaign")
        if raw is None:
            raise UserError("ledger has no campaign recorded", file=self.path)
        return json.loads(raw)

    @property
    def plan(self) -> RangePlan:
        if self._plan is None:
            c = self.campaign_json()
            self._plan = RangePlan(
                campaign=c["name"],
                events=c["events"],
                first_event=c["first_event"],
                events_per_range=c["events_per_range"],
                events_per_merge=c["events_per_merge"],
                seed=c["seed"],
            )
        return self._plan

    # --- range transitions ---------------------------------------------------
    def start_ranges(self, ranges: Iterable[EventRange], node_type: str, now: float) -> list[int]:
        """Mark ranges running on one node type; return each one's attempt number."""
        return self.start_many([(r, node_type) for r in ranges], now)

    def start_many(self, work: Iterable[tuple[EventRange, str]], now: float) -> list[int]:
        """Mark ranges running (one transaction for all); return their attempt numbers.

        Only a ready or failed range can start: anything else means the caller
        lost track, and the whole batch is refused.
        """
        attempts = []
        with self.transaction():
            for r, node_type in work:
                row = self.conn.execute(
                    "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, seed, "
                    "state, attempts, node_type, started) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?) "
                    "ON CONFLICT(idx) DO UPDATE SET state='running', attempts=attempts+1, "
                    "node_type=excluded.node_type, started=excluded.started, finished=NULL, "
                    "host=NULL, worker=NULL, slurm_job=NULL "
                    "WHERE state IN ('ready', 'failed') RETURNING attempts",
                    (
                        r.index,
                        r.id,
                        r.first_event,
                        r.last_event,
                        r.merge_group,
                        r.seed,
                        node_type,
                        now,
                    ),
                ).fetchone()
                if row is None:
                    raise RuntimeError(f"range {r.id} is not ready; cannot start it")
                attempts.append(row[0])
        return attempts

    def record_outcomes(self, outcomes: Iterable[RangeOutcome], max_failures: int) -> list[str]:
        """Record attempts' outcomes in one transaction; return each range's new state.

        An outcome for an attempt that is no longer the range's current one (a
        late result) changes nothing and returns 'stale'.
        """
        states = []
        with self.transaction():
            for o in outcomes:
                values = asdict(o)
                self.conn.execute(
                    "INSERT INTO attempts (range_idx, attempt, outcome, node_type, host, worker, "
                    "slurm_job, accelerator, started, finished, error) VALUES (:index, :attempt, "
                    ":outcome, :node_type, :host, :worker, :slurm_job, :accelerator, :started, "
                    ":finished, :error)",
                    values,
                )
                states.append(self._apply_outcome(values, max_failures))
        return states

    def _apply_outcome(self, o: dict[str, Any], max_failures: int) -> str:
        """Move a running range to done, failed or fatal; 'stale' if the attempt is old.

        ``late`` is the result of an attempt the driver already gave up on (timed
        out): kept in the attempts table for the record, never applied.
        """
        if o["outcome"] == "late":
            return "stale"
        where = "WHERE idx=:index AND attempts=:attempt AND state='running' RETURNING state"
        common = "host=:host, worker=:worker, slurm_job=:slurm_job, accelerator=:accelerator"
        if o["outcome"] == "done":
            o["duration"] = o["finished"] - o["started"]
            sql = (
                f"UPDATE ranges SET state='done', {common}, started=:started, finished=:finished, "
                "duration=:duration, output=:output, size=:size, checksum=:checksum, "
                f"n_events=:n_events, error=NULL {where}"
            )
        else:
            infrastructure = o["outcome"] in ("lost", "timeout")
            counts = "lost=lost+1" if infrastructure else "failures=failures+1"
            o["max_failures"] = max_failures
            o["max_lost"] = max_failures * LOST_FACTOR
            sql = (
                f"UPDATE ranges SET {counts}, {common}, finished=:finished, error=:error, "
                "state=CASE WHEN :outcome='fatal' THEN 'fatal' "
                "WHEN :outcome='failed' AND failures+1 >= :max_failures THEN 'fatal' "
                "WHEN :outcome IN ('lost','timeout') AND lost+1 >= :max_lost THEN 'fatal' "
                "ELSE 'failed' END "
                f"{where}"
            )
        row = self.conn.execute(sql, o).fetchone()
        return row[0] if row else "stale"

    def redo_damaged(self, problems: dict[int, str], now: float) -> list[int]:
        """Send done ranges whose files are damaged back to be simulated again.

        Recorded as a ``damaged`` attempt outcome; not counted as a failure.
        Returns the ranges actually reset.
        """
        reset = []
        with self.transaction():
            for idx, problem in problems.items():
                row = self.conn.execute(
                    "UPDATE ranges SET state='ready', output=NULL, size=NULL, checksum=NULL, "
                    "error=? WHERE idx=? AND state IN ('done','merged') RETURNING attempts, "
                    "node_type",
                    (problem, idx),
                ).fetchone()
                if row is None:
                    continue
                self.conn.execute(
                    "INSERT INTO attempts (range_idx, attempt, outcome, node_type, finished, "
                    "error) VALUES (?, ?, 'damaged', ?, ?, ?)",
                    (idx, row[0], row[1], now, problem),
                )
                reset.append(idx)
        return reset

    # --- merges --------------------------------------------------------------
    def start_merge(self, group: int, node_type: str, now: float) -> int:
        with self.transaction():
            row = self.conn.execute(
                "UPDATE merges SET state='running', attempts=attempts+1, node_type=?, started=?, "
                "error=NULL WHERE group_idx=? AND state IN ('waiting','failed') RETURNING attempts",
                (node_type, now, group),
            ).fetchone()
        if row is None:
            raise RuntimeError(f"merge group {group} is not waiting; cannot start it")
        return row[0]

    def finish_merge(self, group: int, result: dict[str, Any]) -> None:
        """Record a merged file (already on disk) and mark its ranges merged."""
        with self.transaction():
            self.conn.execute(
                "UPDATE merges SET state='done', host=?, started=?, finished=?, duration=?, "
                "output=?, size=?, checksum=?, n_events=?, error=NULL WHERE group_idx=?",
                (
                    result["host"],
                    result["started"],
                    result["finished"],
                    result["finished"] - result["started"],
                    result["output"],
                    result["size"],
                    result["checksum"],
                    result["n_events"],
                    group,
                ),
            )
            self.conn.execute(
                "UPDATE ranges SET state='merged' WHERE merge_group=? AND state='done'", (group,)
            )

    def fail_merge(self, group: int, error: str) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE merges SET state='failed', error=?, finished=? WHERE group_idx=?",
                (error, time.time(), group),
            )

    def record_validation(self, group: int, passed: bool, error: str | None = None) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE merges SET validation=?, validated_at=?, validation_error=? "
                "WHERE group_idx=?",
                ("passed" if passed else "failed", time.time(), error, group),
            )

    # --- queries -------------------------------------------------------------
    def range_rows(self, states: Iterable[str] | None = None) -> Iterator[sqlite3.Row]:
        if states is None:
            yield from self.conn.execute("SELECT * FROM ranges ORDER BY idx")
            return
        states = tuple(states)
        marks = ",".join("?" * len(states))
        yield from self.conn.execute(
            f"SELECT * FROM ranges WHERE state IN ({marks}) ORDER BY idx", states
        )

    def merge_rows(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM merges ORDER BY group_idx").fetchall()

    def merge_row(self, group: int) -> sqlite3.Row:
        return self.conn.execute("SELECT * FROM merges WHERE group_idx=?", (group,)).fetchone()

    def group_range_outputs(self, group: MergeGroup) -> list[dict[str, Any]]:
        """Records of the group's done ranges, in event order."""
        rows = self.conn.execute(
            "SELECT idx, id, first_event, last_event, output, size, checksum, n_events "
            "FROM ranges WHERE merge_group=? AND state IN ('done','merged') ORDER BY idx",
            (group.index,),
        ).fetchall()
        return [dict(r) for r in rows]

    def next_untouched(self) -> int:
        """Index of the first range never dispatched (rows exist below it)."""
        row = self.conn.execute("SELECT MAX(idx) FROM ranges").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def summary(self) -> Summary:
        plan = self.plan
        ranges = {s: 0 for s in RANGE_STATES}
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM ranges GROUP BY state"):
            ranges[state] = n
        ranges["ready"] += plan.n_ranges - sum(ranges.values())
        merges = {s: 0 for s in MERGE_STATES}
        for state, n in self.conn.execute("SELECT state, COUNT(*) FROM merges GROUP BY state"):
            merges[state] = n
        validated = {"passed": 0, "failed": 0}
        for state, n in self.conn.execute(
            "SELECT validation, COUNT(*) FROM merges WHERE validation IS NOT NULL "
            "GROUP BY validation"
        ):
            validated[state] = n
        done = self.conn.execute(
            "SELECT COALESCE(SUM(n_events), 0) FROM ranges WHERE state IN ('done','merged')"
        ).fetchone()[0]
        merged = self.conn.execute(
            "SELECT COALESCE(SUM(n_events), 0) FROM merges WHERE state='done'"
        ).fetchone()[0]
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
            by_node_type=self.work_by_node_type(),
        )

    def work_by_node_type(self) -> dict[str, dict[str, float]]:
        """How the simulated ranges were shared between node types."""
        out: dict[str, dict[str, float]] = {}

        def share(node_type: str | None) -> dict[str, float]:
            zero = ("ranges", "events", "hosts", "batch_jobs", "mean_range_seconds")
            return out.setdefault(
                node_type or "?", dict.fromkeys((*zero, "lost_attempts", "failed_attempts"), 0)
            )

        for nt, n, events, hosts, jobs, mean in self.conn.execute(
            "SELECT node_type, COUNT(*), COALESCE(SUM(n_events), 0), COUNT(DISTINCT host), "
            "COUNT(DISTINCT slurm_job), AVG(duration) FROM ranges "
            "WHERE state IN ('done','merged') GROUP BY node_type ORDER BY node_type"
        ):
            share(nt).update(
                ranges=n,
                events=events,
                hosts=hosts,
                batch_jobs=jobs,
                mean_range_seconds=round(mean or 0.0, 3),
            )
        for nt, outcome, n in self.conn.execute(
            "SELECT node_type, outcome, COUNT(*) FROM attempts "
            "WHERE outcome IN ('lost','failed','fatal') GROUP BY node_type, outcome"
        ):
            share(nt)["lost_attempts" if outcome == "lost" else "failed_attempts"] += n
        return out

    # --- resume --------------------------------------------------------------
    def reset_for_resume(self, output_dir: Path) -> dict[str, int]:
        """Undo what a stopped driver left in flight, and distrust missing files.

        Running ranges and merges go back to be redone (their workers are gone);
        a done range or merge whose file is missing or has the wrong size is
        redone too. Returns counts of what was reset.
        """
        counts = {
            "ranges_running": 0,
            "ranges_missing": 0,
            "merges_running": 0,
            "merges_missing": 0,
            "fatal_retried": 0,
        }
        with self.transaction():
            counts["ranges_running"] = self.conn.execute(
                "UPDATE ranges SET state='ready' WHERE state='running'"
            ).rowcount
            counts["fatal_retried"] = self.conn.execute(
                "UPDATE ranges SET state='ready', failures=0 WHERE state='fatal'"
            ).rowcount
            counts["merges_running"] = self.conn.execute(
                "UPDATE merges SET state='waiting' WHERE state IN ('running','failed')"
            ).rowcount
            for m in self.conn.execute(
                "SELECT group_idx, output, size, validation FROM merges WHERE state='done'"
            ).fetchall():
                if m["validation"] == "failed" or not _file_ok(output_dir, m["output"], m["size"]):
                    counts["merges_missing"] += 1
                    self.conn.execute(
                        "UPDATE merges SET state='waiting', output=NULL, size=NULL, checksum=NULL, "
                        "validation=NULL WHERE group_idx=?",
                        (m["group_idx"],),
                    )
                    self.conn.execute(
                        "UPDATE ranges SET state='done' WHERE merge_group=? AND state='merged'",
                        (m["group_idx"],),
                    )
            for r in self.conn.execute(
                "SELECT idx, merge_group, output, size FROM ranges WHERE state='done'"
            ).fetchall():
                if not _file_ok(output_dir, r["output"], r["size"]):
                    counts["ranges_missing"] += 1
                    self.conn.execute("UPDATE ranges SET state='ready' WHERE idx=?", (r["idx"],))
            unproven = self.conn.execute(
                "SELECT COUNT(*) FROM merges WHERE state != 'done' OR validation IS NOT 'passed'"
            ).fetchone()[0]
            if unproven:  # an earlier campaign validation no longer speaks for the outputs
                self.conn.execute("DELETE FROM meta WHERE key='campaign_validation'")
        return counts


def _file_ok(output_dir: Path, rel: str | None, size: int | None) -> bool:
    if not rel:
        return False
    try:
        return (output_dir / rel).stat().st_size == size
    except OSError:
        return False


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type:
            self.conn.execute("ROLLBACK")
            return
        crash_point("ledger-commit")
        self.conn.execute("COMMIT")
