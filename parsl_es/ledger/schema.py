"""The ledger's tables: the layout ``SCHEMA_VERSION`` this code writes.

``meta.schema_version`` says which layout a ledger has (a ledger without it is
version 1); ``migrations`` brings older ones to this one. A chain campaign's
steps have tables of their own, the same DDL under the step's name (``scoped``).
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 7

#: The tables (and view) each step of a chain campaign has on its own, under its name
#: (``<step>_ranges``, ...); a single-step campaign has them unprefixed, as always.
STEP_TABLES = ("ranges", "merges", "attempts", "range_info", "merged_tally", "merged_where")
_STEP_TABLE = re.compile(
    r"\b(FROM|INTO|UPDATE|JOIN|TABLE|VIEW|ON)(\s+(?:IF\s+EXISTS\s+)?)("
    + "|".join(STEP_TABLES)
    + r")\b"
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

TASKS = """
CREATE {temp}TABLE IF NOT EXISTS tasks (
    task INTEGER PRIMARY KEY,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    pool TEXT, block TEXT, recorded REAL,
    setup REAL  -- seconds this task spent initialising the payload (a worker's first task)
)"""

#: Starts of long-lived transforms (the command payload's service mode), where they ran.
TRANSFORMS = """
CREATE {temp}TABLE IF NOT EXISTS transforms (
    node_type TEXT, host TEXT, worker TEXT, pool TEXT, block TEXT,
    started REAL NOT NULL,
    init_seconds REAL,  -- start to its first 'Ready for events'; NULL: it never was ready
    restart INTEGER NOT NULL  -- 1: it replaced a transform that died, hung or misbehaved
)"""

#: Ranges with where they ran: a successful range points at its task's row; failed
#: attempts and ledgers from before tasks were recorded carry it in the range itself.
#: A done range whose merge group's merge is done shows as ``merged``: from version 7
#: on its row keeps ``done`` (``finish_merge`` writes the merge's row alone); older
#: ledgers have ``merged`` in the row, shown as it is.
RANGE_INFO = """
CREATE {temp}VIEW range_info AS
SELECT r.idx, r.id, r.first_event, r.last_event, r.merge_group, r.seed,
    CASE WHEN r.state = 'done'
        AND (SELECT m.state FROM merges m WHERE m.group_idx = r.merge_group) = 'done'
        THEN 'merged' ELSE r.state END AS state,
    r.attempts,
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
        TASKS.format(temp=""),
        TRANSFORMS.format(temp=""),
    )
)
#: Version 5: what ``es-run status`` and a resume read without visiting every range.
#:
#: ``merged_tally``: per merge group whose merge is done, per node type, its ranges,
#: events and range seconds; ``merged_where``: per node type, the hosts and batch
#: jobs that simulated ranges of done merges, with how many such groups each served.
#: Both are kept by triggers on the merge's state (once per merge group, never per
#: range: the range write path is untouched; the hosts and jobs from the group's
#: distinct tasks, not from each range's row joined to its task), from the group's
#: ranges as they are when the merge is recorded done (all of them done by then).
#: A merge is done only when every range of its group is done, and only
#: ``reset_for_resume`` moves a done merge back: so the merged ranges (done ranges of
#: a done merge; ``range_info`` shows them as ``merged``) are exactly those that
#: ``merged_tally`` counts, and the ranges not merged are exactly those of the groups
#: whose merge is not done (``OPEN_RANGES``). Until version 7, ``finish_merge`` also
#: wrote ``merged`` into each range's row, in the same transaction: 1.8 us a range.
#:
#: Version 5 also had ``ranges_unmerged``, a partial index of the ranges not merged;
#: version 7 drops it (``OPEN_RANGES`` finds the same rows through the merge groups),
#: because keeping it up to date cost each range's result about 2 us of the driver's
#: time, three index writes per range (started, done, merged).
#: The hosts and batch jobs, per node type, of merge group ``{g}``'s done ranges (``new``
#: or ``old`` in a trigger): from the group's distinct tasks, so not from each range's
#: row joined to its task. One fragment for both triggers: what ``merges_undone`` takes
#: away is exactly what ``merges_done`` added.
_GROUP_PLACES = """
    SELECT COALESCE(d.node_type, '') AS nt, 'host' AS kind, COALESCE(t.host, d.host) AS name
    FROM (SELECT DISTINCT node_type, task, host FROM ranges
        WHERE idx BETWEEN {g}.first_range AND {g}.last_range AND state IN ('done','merged')) d
    LEFT JOIN tasks t ON t.task = d.task
    WHERE COALESCE(t.host, d.host) IS NOT NULL
    UNION
    SELECT COALESCE(d.node_type, ''), 'job', COALESCE(t.slurm_job, d.slurm_job)
    FROM (SELECT DISTINCT node_type, task, slurm_job FROM ranges
        WHERE idx BETWEEN {g}.first_range AND {g}.last_range AND state IN ('done','merged')) d
    LEFT JOIN tasks t ON t.task = d.task
    WHERE COALESCE(t.slurm_job, d.slurm_job) IS NOT NULL
"""
MERGES_DONE = f"""CREATE TRIGGER merges_done AFTER UPDATE OF state ON merges
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
    SELECT nt, kind, name, 1 FROM ({_GROUP_PLACES.format(g="new")}) WHERE true
    ON CONFLICT (node_type, kind, name) DO UPDATE SET groups = groups + 1;
END"""
MERGES_UNDONE = f"""CREATE TRIGGER merges_undone AFTER UPDATE OF state ON merges
WHEN old.state = 'done' AND new.state != 'done'
BEGIN
    DELETE FROM merged_tally WHERE group_idx = old.group_idx;
    UPDATE merged_where SET groups = groups - 1 WHERE (node_type, kind, name) IN (
        SELECT nt, kind, name FROM ({_GROUP_PLACES.format(g="old")}));
    DELETE FROM merged_where WHERE groups <= 0;
END"""
#: Versions 5 and 6's partial index (above), which version 7 drops: kept to rebuild
#: such a ledger (tests, benchmarks).
UNMERGED_INDEX_V5 = (
    "CREATE INDEX ranges_unmerged ON ranges (state, merge_group) WHERE state != 'merged'"
)
V5_DDL = (
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
    MERGES_DONE,
    MERGES_UNDONE,
)
#: Version 6: ``es-run status`` counts merge groups by state and failed attempts by
#: outcome from indexes that hold every column it reads, not by scanning the tables'
#: wide rows (``tests/test_ledger_scale.py`` checks the plans). Both tables are
#: written once per merge or per failed attempt, never per successful range.
V6_DDL = (
    "CREATE INDEX merges_states ON merges (state, validation, n_events)",
    "CREATE INDEX attempts_outcome ON attempts (outcome, node_type)",
)


def open_ranges(source: str = "ranges") -> str:
    """``OPEN_RANGES`` with the ranges read from ``source`` (``range_info``: with where
    they ran)."""
    return (
        f"FROM merges m JOIN {source} r ON r.idx BETWEEN m.first_range AND m.last_range "
        "WHERE m.state IN ('waiting','running','failed')"
    )


#: The rows of the ranges not merged, ``r``, with their merge group's row ``m``: the
#: groups whose merge is not done (through ``merges_states``), each group's ranges by
#: primary key. A query adds ``AND r.<condition>``. Its cost follows the open merge
#: groups and their ranges: a few thousand rows in a large campaign's in-flight band,
#: not the merged ranges that are nearly all of it. (A range is merged exactly when its
#: group's merge is done: see ``V5_DDL``.)
OPEN_RANGES = open_ranges()

#: Object names of ``V5_DDL`` and ``V6_DDL`` that carry a chain step's name (tables are
#: scoped anyway).
_STEP_OBJECTS = (
    "attempts_range",
    "ranges_unmerged",  # (``UNMERGED_INDEX_V5``)
    "merged_tally_group",
    "merges_done",
    "merges_undone",
    "merges_states",
    "attempts_outcome",
)
_STEP_OBJECT = re.compile(
    r"\b(INDEX|TRIGGER)(\s+(?:IF\s+EXISTS\s+)?)(" + "|".join(_STEP_OBJECTS) + r")\b"
)

#: What a step has of its own (a single-step campaign: unprefixed).
STEP_DDL = ";\n".join(
    (
        _RANGES,
        _ATTEMPTS,
        "CREATE INDEX attempts_range ON attempts (range_idx)",
        _MERGES,
        RANGE_INFO.format(temp=""),
        *V5_DDL,
        *V6_DDL,
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


def step_ddl(step: str | None, ddl: str = STEP_DDL) -> str:
    """A step's tables, view and indexes (or the statement ``ddl``), under its name."""
    return step_objects(scoped(ddl, step), step)


def step_objects(ddl: str, step: str | None) -> str:
    """Index and trigger names of a step's own (SQLite's are per database, not per table)."""
    if step is None:
        return ddl
    return _STEP_OBJECT.sub(lambda m: f"{m[1]}{m[2]}{step}_{m[3]}", ddl)
