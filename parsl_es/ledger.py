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
from collections.abc import Iterable, Iterator, Sequence
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

#: The ranges of merge group ``?`` (twice), by primary key: no scan of the whole table.
_IN_GROUP = (
    "idx BETWEEN (SELECT first_range FROM merges WHERE group_idx=?) "
    "AND (SELECT last_range FROM merges WHERE group_idx=?)"
)

#: Ranges with where they ran: a successful range points at its task's row; failed
#: attempts and ledgers from before tasks were recorded carry it in the range itself.
_RANGE_INFO = """
CREATE VIEW IF NOT EXISTS range_info AS
SELECT r.idx, r.id, r.first_event, r.last_event, r.merge_group, r.seed, r.state, r.attempts,
    r.failures, r.lost, r.node_type,
    COALESCE(t.host, r.host) AS host, COALESCE(t.worker, r.worker) AS worker,
    COALESCE(t.slurm_job, r.slurm_job) AS slurm_job,
    COALESCE(t.accelerator, r.accelerator) AS accelerator,
    r.started, r.finished, r.finished - r.started AS duration, r.output, r.size, r.checksum,
    r.n_events, r.error, r.task
FROM ranges r LEFT JOIN tasks t ON t.task = r.task
"""
_TASKS = """
CREATE TABLE IF NOT EXISTS tasks (
    task INTEGER PRIMARY KEY,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    pool TEXT, block TEXT, recorded REAL,
    setup REAL  -- seconds this task spent initialising the payload (a worker's first task)
)
"""

_INSERT_ATTEMPT = (
    "INSERT INTO attempts (range_idx, attempt, outcome, node_type, host, worker, slurm_job, "
    "accelerator, started, finished, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_MARK_DONE = (
    "UPDATE ranges SET state='done', task=?, started=?, finished=?, output=?, size=?, "
    "checksum=?, n_events=? WHERE idx=? AND attempts=? AND state='running'"
)
_INSERT_TASK = (
    "INSERT INTO tasks (node_type, host, worker, slurm_job, accelerator, pool, block, recorded, "
    "setup) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ranges (
    idx INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    merge_group INTEGER NOT NULL,
    seed INTEGER,  -- derivable (ranges.range_seed); ledgers before 0.2 require it
    state TEXT NOT NULL CHECK (state IN ('ready','running','done','merged','failed','fatal')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    started REAL, finished REAL, duration REAL,
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER,
    error TEXT,
    task INTEGER  -- the Parsl task (bundle) that simulated it: where it ran
);
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
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER, error TEXT, worker TEXT,
    validation TEXT CHECK (validation IN ('passed','failed')),
    validated_at REAL, validation_error TEXT, validation_worker TEXT, validation_started REAL
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
        # Ledgers written before range seeds became derivable insist on storing them.
        self._stores_seed = any(
            row[1] == "seed" and row[3] for row in conn.execute("PRAGMA table_info(ranges)")
        )

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
            conn.execute(_TASKS)
            conn.execute(_RANGE_INFO)
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
            _upgrade(conn, readonly)
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

    def start_many(
        self, work: Iterable[tuple[EventRange, str]], now: float, fresh_from: int | None = None
    ) -> list[int]:
        """Mark ranges running (one transaction for all); return their attempt numbers."""
        return self.start_indices([(r.index, nt) for r, nt in work], now, fresh_from)

    def start_indices(
        self, work: list[tuple[int, str]], now: float, fresh_from: int | None = None
    ) -> list[int]:
        """Mark ranges ``(index, node type)`` running in one transaction; return attempts.

        Ranges with an index of at least ``fresh_from`` have never been started:
        they are inserted in one batched statement, the cheap path that keeps the
        ledger off the critical path of fast campaigns. The others (retries) go
        one by one: only a ready or failed range can start; anything else means the
        caller lost track, and the whole batch is refused.
        """
        plan = self.plan
        fresh_from = plan.n_ranges if fresh_from is None else fresh_from
        node_types = dict(work)
        attempts = []
        with self.transaction():
            fresh = [i for i, _ in work if i >= fresh_from]
            if fresh:
                seeds = [plan.range(i).seed if self._stores_seed else None for i in fresh]
                try:
                    self.conn.executemany(
                        "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, "
                        "seed, state, attempts, node_type, started) "
                        "VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?)",
                        [
                            (*row, seed, node_types[row[0]], now)
                            for row, seed in zip(plan.rows(fresh), seeds, strict=True)
                        ],
                    )
                except sqlite3.IntegrityError:
                    raise RuntimeError("a range started as new is already in the ledger") from None
            for index, node_type in work:
                if index >= fresh_from:
                    attempts.append(1)
                    continue
                r = plan.range(index)
                row = self.conn.execute(
                    "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, seed, "
                    "state, attempts, node_type, started) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?) "
                    "ON CONFLICT(idx) DO UPDATE SET state='running', attempts=attempts+1, "
                    "node_type=excluded.node_type, started=excluded.started, finished=NULL, "
                    "host=NULL, worker=NULL, slurm_job=NULL, task=NULL, error=NULL "
                    "WHERE state IN ('ready', 'failed') RETURNING attempts",
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
                attempts.append(row[0])
        return attempts

    def record_outcomes(self, outcomes: Iterable[RangeOutcome], max_failures: int) -> list[str]:
        """Record attempts' outcomes in one transaction; return each range's new state.

        An outcome for an attempt that is no longer the range's current one (a
        late result) changes nothing and returns 'stale'.
        """
        outcomes = list(outcomes)
        states: list[str | None] = [None] * len(outcomes)
        with self.transaction():
            self.conn.executemany(  # a success's record is its range row: not repeated here
                _INSERT_ATTEMPT,
                [
                    (
                        o.index,
                        o.attempt,
                        o.outcome,
                        o.node_type,
                        o.host,
                        o.worker,
                        o.slurm_job,
                        o.accelerator,
                        o.started,
                        o.finished,
                        o.error,
                    )
                    for o in outcomes
                    if o.outcome != "done"
                ],
            )
            done = [i for i, o in enumerate(outcomes) if o.outcome == "done"]
            if done:
                first = outcomes[done[0]]
                task = self._record_task(first.node_type, asdict(first))
                rows = [_done_row(task, outcomes[i]) for i in done]
                for i, ok in zip(done, self._apply_successes(rows), strict=True):
                    states[i] = "done" if ok else "stale"
            for i, o in enumerate(outcomes):
                if states[i] is None:
                    states[i] = self._apply_outcome(asdict(o), max_failures)
        return states  # type: ignore[return-value]

    def record_successes(
        self, tasks: Sequence[tuple[Sequence[Any], str, dict[str, Any]]]
    ) -> list[list[bool]]:
        """Record finished ranges of several tasks in one transaction.

        Each task is ``(results, node type, where)`` with ``apps.RangeResult``s. The
        hot path of a campaign: where a task ran is written once, each range is one
        row of a batched UPDATE. Returns, per task, which results were applied
        (False: a late result for an attempt that is no longer current).
        """
        with self.transaction():
            applied = []
            for results, node_type, where in tasks:
                task = self._record_task(node_type, where)
                applied.append(self._apply_successes([_done_row(task, r) for r in results]))
            return applied

    def _record_task(self, node_type: str | None, where: dict[str, Any]) -> int:
        cursor = self.conn.execute(
            _INSERT_TASK,
            (
                node_type,
                where.get("host"),
                where.get("worker"),
                where.get("slurm_job"),
                where.get("accelerator"),
                where.get("pool"),
                where.get("block"),
                time.time(),
                where.get("setup"),
            ),
        )
        return int(cursor.lastrowid)

    def _apply_successes(self, rows: list[tuple]) -> list[bool]:
        """Mark ranges done in one batched UPDATE; say which were applied (not stale).

        ``rows`` are in the order of ``_MARK_DONE``'s parameters.
        """
        cursor = self.conn.executemany(_MARK_DONE, rows)
        if cursor.rowcount == len(rows):
            return [True] * len(rows)
        # Some matched no running attempt (late results): find which took effect.
        found = {
            r[0]: r
            for r in self.conn.execute(
                f"SELECT idx, attempts, state, task FROM ranges WHERE idx IN "
                f"({','.join('?' * len(rows))})",
                [row[7] for row in rows],
            )
        }
        return [
            (now := found.get(row[7])) is not None
            and (now[1], now[2], now[3]) == (row[8], "done", row[0])
            for row in rows
        ]

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
                "UPDATE merges SET state='done', host=?, worker=?, started=?, finished=?, "
                "duration=?, output=?, size=?, checksum=?, n_events=?, error=NULL "
                "WHERE group_idx=?",
                (
                    result["host"],
                    result.get("worker"),
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
                f"UPDATE ranges SET state='merged' WHERE {_IN_GROUP} AND state='done'",
                (group, group),
            )

    def fail_merge(self, group: int, error: str) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE merges SET state='failed', error=?, finished=? WHERE group_idx=?",
                (error, time.time(), group),
            )

    def record_validation(
        self,
        group: int,
        passed: bool,
        error: str | None = None,
        run: dict[str, Any] | None = None,
    ) -> None:
        """The verdict on a merged file; ``run`` says where and when it was checked."""
        run = run or {}
        with self.transaction():
            self.conn.execute(
                "UPDATE merges SET validation=?, validated_at=?, validation_error=?, "
                "validation_worker=?, validation_started=? WHERE group_idx=?",
                (
                    "passed" if passed else "failed",
                    run.get("finished", time.time()),
                    error,
                    run.get("worker"),
                    run.get("started"),
                    group,
                ),
            )

    # --- queries -------------------------------------------------------------
    def range_rows(self, states: Iterable[str] | None = None) -> Iterator[sqlite3.Row]:
        if states is None:
            yield from self.conn.execute("SELECT * FROM range_info ORDER BY idx")
            return
        states = tuple(states)
        marks = ",".join("?" * len(states))
        yield from self.conn.execute(
            f"SELECT * FROM range_info WHERE state IN ({marks}) ORDER BY idx", states
        )

    def merge_rows(self) -> list[sqlite3.Row]:
        return self.conn.execute("SELECT * FROM merges ORDER BY group_idx").fetchall()

    def merge_row(self, group: int) -> sqlite3.Row:
        return self.conn.execute("SELECT * FROM merges WHERE group_idx=?", (group,)).fetchone()

    def group_range_outputs(self, group: MergeGroup) -> list[tuple[int, str, str]]:
        """``(index, output, checksum)`` of the group's done ranges, in event order."""
        cursor = self.conn.execute(
            "SELECT idx, output, checksum FROM ranges WHERE idx BETWEEN ? AND ? "
            "AND state IN ('done','merged') ORDER BY idx",
            (group.first_range, group.last_range),
        )
        cursor.row_factory = None  # plain tuples: thousands per merge
        return cursor.fetchall()

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
            "COUNT(DISTINCT slurm_job), AVG(duration) FROM range_info "
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
                        f"UPDATE ranges SET state='done' WHERE {_IN_GROUP} AND state='merged'",
                        (m["group_idx"], m["group_idx"]),
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


def _done_row(task: int, r: Any) -> tuple:
    """``_MARK_DONE``'s parameters for a finished range (a ``RangeOutcome`` or ``RangeResult``)."""
    return (
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


def _upgrade(conn: sqlite3.Connection, readonly: bool) -> None:
    """Bring a ledger written by an earlier parsl-es up to date (tasks, range_info).

    Read-only, an old ledger gets a temporary view without the tasks it lacks.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(ranges)")}
    if not readonly:
        if "task" not in columns:
            conn.execute("ALTER TABLE ranges ADD COLUMN task INTEGER")
        conn.execute(_TASKS)
        conn.execute(_RANGE_INFO)
        for table, column, kind in (
            ("tasks", "setup", "REAL"),
            ("merges", "worker", "TEXT"),
            ("merges", "validation_worker", "TEXT"),
            ("merges", "validation_started", "REAL"),
        ):
            if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        return
    has_view = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='view' AND name='range_info'"
    ).fetchone()
    if not has_view:
        conn.execute("CREATE TEMP VIEW range_info AS SELECT * FROM ranges")


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
