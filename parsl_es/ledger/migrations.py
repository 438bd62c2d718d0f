"""Numbered migrations from older ledgers to the current layout (``schema``).

Version 1 is what parsl-es 0.1.0 wrote, in several shapes: columns and the
``tasks`` table came and went while it was developed, so a migration adds
whatever is missing and does nothing twice. Migrations run once, in one
transaction, when a ledger is opened read-write; read-only, an old ledger gets
temporary views in the shape of the current one (nothing is written to its file).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from parsl_es.errors import UserError
from parsl_es.ledger.schema import (
    MERGES_DONE,
    MERGES_UNDONE,
    RANGE_INFO,
    SCHEMA_VERSION,
    TASKS,
    TRANSFORMS,
    V5_DDL,
    V6_DDL,
    scoped,
    step_ddl,
)

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
    conn.execute(TASKS.format(temp=""))
    for table, column, kind in _ADDED_COLUMNS:
        if column not in columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    conn.execute("DROP VIEW IF EXISTS range_info")
    conn.execute(RANGE_INFO.format(temp=""))


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """The ``transforms`` table (service mode's transform starts)."""
    conn.execute(TRANSFORMS.format(temp=""))


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
    """The counts of merged ranges (per step); version 5's partial index of unmerged
    ranges is not made, as version 7 drops it."""
    for step in _steps(conn):
        for ddl in V5_DDL:
            conn.execute(step_ddl(step, ddl))
        for sql in _V5_BACKFILL:
            conn.execute(scoped(sql, step))


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """The covering indexes of merge states and attempt outcomes (per step)."""
    for step in _steps(conn):
        for ddl in V6_DDL:
            conn.execute(step_ddl(step, ddl))


def _v6_to_v7(conn: sqlite3.Connection) -> None:
    """No partial index of unmerged ranges (``schema.OPEN_RANGES`` reads them), the
    view that shows a done range of a done merge as merged, and the triggers that tally
    a merge from its group's tasks (per step). Rows that say ``merged`` stay as they
    are: the view shows them so too."""
    for step in _steps(conn):
        for sql in (
            "DROP INDEX IF EXISTS ranges_unmerged",
            "DROP VIEW IF EXISTS range_info",
            RANGE_INFO.format(temp=""),
            "DROP TRIGGER IF EXISTS merges_done",
            "DROP TRIGGER IF EXISTS merges_undone",
            MERGES_DONE,
            MERGES_UNDONE,
        ):
            conn.execute(step_ddl(step, sql))


#: ``MIGRATIONS[n]`` brings a version ``n`` ledger to version ``n + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7,
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
        conn.execute(TASKS.format(temp="TEMP "))
    elif "setup" not in columns(conn, "tasks"):
        conn.execute("CREATE TEMP VIEW tasks AS SELECT *, NULL AS setup FROM main.tasks")
    if not _has_table(conn, "transforms"):
        conn.execute(TRANSFORMS.format(temp="TEMP "))
    for table in ("ranges", "attempts", "merges"):
        have = columns(conn, table)
        missing = [c for t, c, _ in _ADDED_COLUMNS if t == table and c not in have]
        if missing:
            extra = ", ".join(f"NULL AS {c}" for c in missing)
            conn.execute(f"CREATE TEMP VIEW {table} AS SELECT *, {extra} FROM main.{table}")
    conn.execute("DROP VIEW IF EXISTS temp.range_info")
    conn.execute(RANGE_INFO.format(temp="TEMP "))
