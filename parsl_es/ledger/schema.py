"""The ledger's tables, and numbered migrations from older ledgers.

``SCHEMA_VERSION`` is the layout this code writes; ``meta.schema_version`` says
which one a ledger has (a ledger without it is version 1). Version 1 is what
parsl-es 0.1.0 wrote, in several shapes: columns and the ``tasks`` table came
and went while it was developed, so a migration adds whatever is missing and
does nothing twice. Migrations run once, in one transaction, when a ledger is
opened read-write; read-only, an old ledger gets temporary views in the shape
of the current one (nothing is written to its file).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable

from parsl_es.errors import UserError

SCHEMA_VERSION = 6

#: The tables (and view) each step of a chain campaign has on its own, under its name
#: (``<step>_ranges``, ...); a single-step campaign has them unprefixed, as always.
STEP_TABLES = ("ranges", "merges", "attempts", "range_info", "merged_tally", "merged_where")
_STEP_TABLE = re.compile(
    r"\b(FROM|INTO|UPDATE|JOIN|TABLE|VIEW|ON)(\s+)(" + "|".join(STEP_TABLES) + r")\b"
)

_RANGES = """
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
    task INTEGER  -- the task (bundle) that simulated it: where it ran
)"""

_ATTEMPTS = """
CREATE TABLE attempts (
    range_idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    started REAL, finished REAL, error TEXT
)"""

_MERGES = """
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
)"""

_TASKS = """
CREATE {temp}TABLE IF NOT EXISTS tasks (
    task INTEGER PRIMARY KEY,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    pool TEXT, block TEXT, recorded REAL,
    setup REAL  -- seconds this task spent initialising the payload (a worker's first task)
)"""

#: Starts of long-lived transforms (the command payload's service mode), where they ran.
_TRANSFORMS = """
CREATE {temp}TABLE IF NOT EXISTS transforms (
    node_type TEXT, host TEXT, worker TEXT, pool TEXT, block TEXT,
    started REAL NOT NULL,
    init_seconds REAL,  -- start to its first 'Ready for events'; NULL: it never was ready
    restart INTEGER NOT NULL  -- 1: it replaced a transform that died, hung or misbehaved
)"""

#: Ranges with where they ran: a successful range points at its task's row; failed
#: attempts and ledgers from before tasks were recorded carry it in the range itself.
_RANGE_INFO = """
CREATE {temp}VIEW range_info AS
SELECT r.idx, r.id, r.first_event, r.last_event, r.merge_group, r.seed, r.state, r.attempts,
    r.failures, r.lost, r.node_type,
    COALESCE(t.host, r.host) AS host, COALESCE(t.worker, r.worker) AS worker,
    COALESCE(t.slurm_job, r.slurm_job) AS slurm_job,
    COALESCE(t.accelerator, r.accelerator) AS accelerator,
    r.started, r.finished, r.finished - r.started AS duration, r.output, r.size, r.checksum,
    r.n_events, r.error, r.task
FROM ranges r LEFT JOIN tasks t ON t.task = r.task
"""

#: What every ledger has once, shared by the steps of a chain.
SHARED_DDL = ";\n".join(
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        _TASKS.format(temp=""),
        _TRANSFORMS.format(temp=""),
    )
)
#: Version 5: what ``es-run status`` and a resume read without visiting every range.
#:
#: ``ranges_unmerged``: a partial index of the ranges not merged. Merged ranges are
#: nearly all of a large campaign and never change again while their merge stands;
#: the others (running, done, failed, fatal, ready again) are the in-flight band,
#: a few thousand rows. A query uses it when its WHERE has ``state != 'merged'``
#: literally (SQLite's rule for partial indexes).
#:
#: ``merged_tally``: per merge group whose merge is done, per node type, its ranges,
#: events and range seconds; ``merged_where``: per node type, the hosts and batch
#: jobs that simulated ranges of done merges, with how many such groups each served.
#: Both are kept by triggers on the merge's state (once per merge group, never per
#: range: the range write path is untouched), from the group's ranges as they are
#: when the merge is recorded done (done or merged: at that moment all of them).
#: A merge is done only when every range of its group is done, ``finish_merge``
#: marks them all merged in the same transaction, and only ``reset_for_resume``
#: moves a done merge back (and its ranges with it): so the ranges in state
#: ``merged`` are exactly those that ``merged_tally`` counts.
_V5_DDL = (
    "CREATE INDEX ranges_unmerged ON ranges (state, merge_group) WHERE state != 'merged'",
    """CREATE TABLE merged_tally (
    group_idx INTEGER NOT NULL,
    node_type TEXT,
    ranges INTEGER NOT NULL,
    events INTEGER NOT NULL,
    timed INTEGER NOT NULL,  -- ranges with a duration
    seconds REAL NOT NULL
)""",
    "CREATE INDEX merged_tally_group ON merged_tally (group_idx)",
    """CREATE TABLE merged_where (
    node_type TEXT NOT NULL,  -- '' for none
    kind TEXT NOT NULL CHECK (kind IN ('host','job')),
    name TEXT NOT NULL,
    groups INTEGER NOT NULL,
    PRIMARY KEY (node_type, kind, name)
) WITHOUT ROWID""",
    """CREATE TRIGGER merges_done AFTER UPDATE OF state ON merges
WHEN new.state = 'done' AND old.state != 'done'
BEGIN
    DELETE FROM merged_tally WHERE group_idx = new.group_idx;
    INSERT INTO merged_tally (group_idx, node_type, ranges, events, timed, seconds)
    SELECT new.group_idx, node_type, COUNT(*), COALESCE(SUM(n_events), 0),
        COUNT(finished - started), COALESCE(SUM(finished - started), 0)
    FROM ranges WHERE idx BETWEEN new.first_range AND new.last_range
        AND state IN ('done','merged')
    GROUP BY node_type;
    INSERT INTO merged_where (node_type, kind, name, groups)
    SELECT nt, kind, name, 1 FROM (
        SELECT COALESCE(node_type, '') AS nt, 'host' AS kind, host AS name FROM range_info
        WHERE idx BETWEEN new.first_range AND new.last_range AND state IN ('done','merged')
            AND host IS NOT NULL
        UNION
        SELECT COALESCE(node_type, ''), 'job', slurm_job FROM range_info
        WHERE idx BETWEEN new.first_range AND new.last_range AND state IN ('done','merged')
            AND slurm_job IS NOT NULL
    ) WHERE true
    ON CONFLICT (node_type, kind, name) DO UPDATE SET groups = groups + 1;
END""",
    """CREATE TRIGGER merges_undone AFTER UPDATE OF state ON merges
WHEN old.state = 'done' AND new.state != 'done'
BEGIN
    DELETE FROM merged_tally WHERE group_idx = old.group_idx;
    UPDATE merged_where SET groups = groups - 1 WHERE (node_type, kind, name) IN (
        SELECT COALESCE(node_type, ''), 'host', host FROM range_info
        WHERE idx BETWEEN old.first_range AND old.last_range AND state IN ('done','merged')
            AND host IS NOT NULL
        UNION
        SELECT COALESCE(node_type, ''), 'job', slurm_job FROM range_info
        WHERE idx BETWEEN old.first_range AND old.last_range AND state IN ('done','merged')
            AND slurm_job IS NOT NULL
    );
    DELETE FROM merged_where WHERE groups <= 0;
END""",
)
#: Version 6: ``es-run status`` counts merge groups by state and failed attempts by
#: outcome from indexes that hold every column it reads, not by scanning the tables'
#: wide rows (``tests/test_ledger_scale.py`` checks the plans). Both tables are
#: written once per merge or per failed attempt, never per successful range.
_V6_DDL = (
    "CREATE INDEX merges_states ON merges (state, validation, n_events)",
    "CREATE INDEX attempts_outcome ON attempts (outcome, node_type)",
)

#: Object names of ``_V5_DDL`` and ``_V6_DDL`` that carry a chain step's name (tables are
#: scoped anyway).
_STEP_OBJECTS = (
    "attempts_range",
    "ranges_unmerged",
    "merged_tally_group",
    "merges_done",
    "merges_undone",
    "merges_states",
    "attempts_outcome",
)
_STEP_OBJECT = re.compile(r"\b(INDEX|TRIGGER)(\s+)(" + "|".join(_STEP_OBJECTS) + r")\b")

#: What a step has of its own (a single-step campaign: unprefixed).
STEP_DDL = ";\n".join(
    (
        _RANGES,
        _ATTEMPTS,
        "CREATE INDEX attempts_range ON attempts (range_idx)",
        _MERGES,
        _RANGE_INFO.format(temp=""),
        *_V5_DDL,
        *_V6_DDL,
    )
)
#: The whole current layout of a single-step campaign's ledger.
DDL = SHARED_DDL + ";\n" + STEP_DDL


def scoped(sql: str, step: str | None) -> str:
    """``sql`` with a chain step's own tables: ``ranges`` -> ``<step>_ranges``, ...

    Step names are checked identifiers (``chain.STEP_NAME``). Every statement of
    this package names its tables after one of the keywords matched here, which
    ``tests/test_chain_ledger.py`` checks statement by statement.
    """
    if step is None:
        return sql
    return _STEP_TABLE.sub(lambda m: f"{m[1]}{m[2]}{step}_{m[3]}", sql)


def step_ddl(step: str | None) -> str:
    """A step's tables, view and index, under its name."""
    return _step_objects(scoped(STEP_DDL, step), step)


def _step_objects(ddl: str, step: str | None) -> str:
    """Index and trigger names of a step's own (SQLite's are per database, not per table)."""
    if step is None:
        return ddl
    return _STEP_OBJECT.sub(lambda m: f"{m[1]}{m[2]}{step}_{m[3]}", ddl)


#: Columns added to version 1 ledgers as they were developed: ``(table, column, type)``.
_ADDED_COLUMNS = (
    ("ranges", "accelerator", "TEXT"),
    ("ranges", "task", "INTEGER"),
    ("attempts", "accelerator", "TEXT"),
    ("tasks", "setup", "REAL"),
    ("merges", "worker", "TEXT"),
    ("merges", "validation_worker", "TEXT"),
    ("merges", "validation_started", "REAL"),
)


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Every column, the ``tasks`` table and the ``range_info`` view of version 2."""
    conn.execute(_TASKS.format(temp=""))
    for table, column, kind in _ADDED_COLUMNS:
        if column not in columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute("DROP VIEW IF EXISTS range_info")
    conn.execute(_RANGE_INFO.format(temp=""))


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """The ``transforms`` table (service mode's transform starts)."""
    conn.execute(_TRANSFORMS.format(temp=""))


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Nothing to change: version 4 adds chain campaigns, whose steps have tables of their
    own (``<step>_ranges``, ...); a parsl-es that knows only version 3 must not open them.
    """


#: Version 5's counts of merged ranges, for the merges already done (the triggers keep
#: them from then on): one pass over the ranges, once, at the first read-write open.
_V5_BACKFILL = (
    """INSERT INTO merged_tally (group_idx, node_type, ranges, events, timed, seconds)
    SELECT m.group_idx, r.node_type, COUNT(*), COALESCE(SUM(r.n_events), 0),
        COUNT(r.finished - r.started), COALESCE(SUM(r.finished - r.started), 0)
    FROM ranges r JOIN merges m ON m.group_idx = r.merge_group
    WHERE m.state = 'done' AND r.state IN ('done','merged')
    GROUP BY m.group_idx, r.node_type""",
    """INSERT INTO merged_where (node_type, kind, name, groups)
    SELECT nt, kind, name, COUNT(*) FROM (
        SELECT DISTINCT m.group_idx, COALESCE(r.node_type, '') AS nt, 'host' AS kind,
            r.host AS name
        FROM range_info r JOIN merges m ON m.group_idx = r.merge_group
        WHERE m.state = 'done' AND r.state IN ('done','merged') AND r.host IS NOT NULL
        UNION ALL
        SELECT DISTINCT m.group_idx, COALESCE(r.node_type, ''), 'job', r.slurm_job
        FROM range_info r JOIN merges m ON m.group_idx = r.merge_group
        WHERE m.state = 'done' AND r.state IN ('done','merged') AND r.slurm_job IS NOT NULL
    ) GROUP BY nt, kind, name""",
)


def _steps(conn: sqlite3.Connection) -> list[str | None]:
    """A chain's step names; ``[None]`` for a single-step campaign's unprefixed tables."""
    raw = conn.execute("SELECT value FROM meta WHERE key='chain_steps'").fetchone()
    return json.loads(raw[0]) if raw else [None]


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    """The partial index of unmerged ranges, and the counts of merged ones (per step)."""
    for step in _steps(conn):
        for ddl in _V5_DDL:
            conn.execute(_step_objects(scoped(ddl, step), step))
        for sql in _V5_BACKFILL:
            conn.execute(scoped(sql, step))


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """The covering indexes of merge states and attempt outcomes (per step)."""
    for step in _steps(conn):
        for ddl in _V6_DDL:
            conn.execute(_step_objects(scoped(ddl, step), step))


#: ``MIGRATIONS[n]`` brings a version ``n`` ledger to version ``n + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
}


def version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return 1 if row is None else int(row[0])


def _check_known(found: int, path: object) -> None:
    if found > SCHEMA_VERSION:
        raise UserError(
            f"ledger schema version {found} was written by a newer parsl-es "
            f"(this one knows up to {SCHEMA_VERSION}): upgrade parsl-es to read it",
            file=str(path),
        )


def prepare(conn: sqlite3.Connection, readonly: bool, path: object) -> int:
    """Make an opened ledger readable in the current layout; return its version on disk."""
    found = version(conn)
    _check_known(found, path)
    if found == SCHEMA_VERSION:
        return found
    if readonly:
        _compat_views(conn)
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = version(conn)  # another process may have migrated it meanwhile
        for step in range(found, SCHEMA_VERSION):
            MIGRATIONS[step](conn)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (str(SCHEMA_VERSION),),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return SCHEMA_VERSION


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
    return row.fetchone() is not None


def _compat_views(conn: sqlite3.Connection) -> None:
    """Temporary objects that show an old ledger in the current layout, read-only.

    Temporary objects live in the connection's own temp database and shadow the
    file's tables of the same name; the ledger's file is not touched.
    """
    if not _has_table(conn, "tasks"):
        conn.execute(_TASKS.format(temp="TEMP "))
    elif "setup" not in columns(conn, "tasks"):
        conn.execute("CREATE TEMP VIEW tasks AS SELECT *, NULL AS setup FROM main.tasks")
    if not _has_table(conn, "transforms"):
        conn.execute(_TRANSFORMS.format(temp="TEMP "))
    for table in ("ranges", "attempts", "merges"):
        have = columns(conn, table)
        missing = [c for t, c, _ in _ADDED_COLUMNS if t == table and c not in have]
        if missing:
            extra = ", ".join(f"NULL AS {c}" for c in missing)
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT *, {extra} FROM main.{table}")
    conn.execute("DROP VIEW IF EXISTS temp.range_info")
    conn.execute(_RANGE_INFO.format(temp="TEMP "))
