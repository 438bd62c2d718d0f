"""Opening, creating and closing a ledger; transactions and campaign metadata."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from parsl_es.crashpoints import crash_point
from parsl_es.dataset_plan import JSON_KIND as DATASET_KIND
from parsl_es.dataset_plan import DatasetPlan
from parsl_es.errors import UserError
from parsl_es.fileio import fsync_dir, fsync_file, temp_path_for
from parsl_es.ledger import migrations, schema
from parsl_es.ranges import RangePlan

LEDGER_NAME = "ledger.sqlite"


#: Every merge group's row, computed by SQLite from the campaign's numbers (a hundred
#: thousand rows in a fraction of a second). The last group's ends are given, not
#: computed: ``first + size - 1`` may not fit 64 bits when the campaign ends at 2**63 - 1.
_MERGE_GROUPS = """
WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i + 1 < :groups)
INSERT INTO merges (group_idx, first_range, last_range, first_event, last_event, state)
SELECT i, i * :ranges_per_merge,
    CASE WHEN i = :groups - 1 THEN :last_range ELSE (i + 1) * :ranges_per_merge - 1 END,
    :first_event + i * :events_per_merge,
    CASE WHEN i = :groups - 1 THEN :last_event
        ELSE :first_event + i * :events_per_merge + (:events_per_merge - 1) END,
    'waiting'
FROM g"""


def plan_json(plan: RangePlan | DatasetPlan) -> str:
    """A step's plan as the ledger keeps it."""
    return plan.to_json() if isinstance(plan, DatasetPlan) else json.dumps(plan.to_json())


def plan_from_json(raw: str) -> RangePlan | DatasetPlan:
    data = json.loads(raw)
    if data.get("kind") == DATASET_KIND:
        return DatasetPlan.from_json(raw)
    return RangePlan.from_json(data)


def _insert_groups(conn: sqlite3.Connection, step: str, plan: RangePlan | DatasetPlan) -> None:
    """A step's merge-group rows: by one statement, or (a dataset's) one row per group."""
    if isinstance(plan, RangePlan):
        conn.execute(schema.scoped(_MERGE_GROUPS, step), _group_numbers(plan))
        return
    rows = (
        (g.index, g.first_range, g.last_range, g.first_event, g.last_event)
        for g in map(plan.group, range(plan.n_merges))
    )
    conn.executemany(
        schema.scoped(
            "INSERT INTO merges (group_idx, first_range, last_range, first_event, last_event, "
            "state) VALUES (?, ?, ?, ?, ?, 'waiting')",
            step,
        ),
        rows,
    )


def _group_numbers(plan: RangePlan) -> dict[str, int]:
    return {
        "groups": plan.n_merges,
        "ranges_per_merge": plan.ranges_per_merge,
        "last_range": plan.n_ranges - 1,
        "first_event": plan.first_event,
        "events_per_merge": plan.events_per_merge,
        "last_event": plan.last_event,
    }


#: Meta keys each step of a chain has of its own (``<step>:<key>``).
STEP_META = frozenset({"campaign_validation", "campaign_validation_run", "campaign_plots_run"})
#: The chain's step names, in order (JSON); absent for a single-step campaign.
CHAIN_KEY = "chain_steps"


def plan_key(step: str) -> str:
    """The meta key holding a chain step's ``RangePlan``."""
    return f"{step}:plan"


class StepConnection:
    """The chain ledger's one connection, with a step's own tables in every statement.

    The steps of a chain share one SQLite file and one connection (so one driver
    thread commits them in order); each step's ledger sees its tables under the
    names a single-step ledger has, so the SQL of this package is written once.
    """

    def __init__(self, conn: sqlite3.Connection, step: str) -> None:
        self._conn = conn
        self._step = step
        self._sql: dict[str, str] = {}

    def _scoped(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = schema.scoped(sql, self._step)
        return out

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self._conn.execute(self._scoped(sql), params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self._conn.executemany(self._scoped(sql), rows)

    def close(self) -> None:
        """The chain's ledger owns the connection and closes it."""


class LedgerCore:
    """One campaign's SQLite ledger: the connection, its transactions and metadata.

    Owned by one driver; readable by anyone (``open(path, readonly=True)``). The
    SQL lives in this package alone: everyone else uses the methods. A chain
    campaign's ledger hands out one ledger per step (``step``), sharing its file.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection | StepConnection,
        readonly: bool,
        step: str | None = None,
    ) -> None:
        self.path = path
        self._conn = conn
        self.readonly = readonly
        self.step_name = step
        self._plan: RangePlan | DatasetPlan | None = None
        # Ledgers written before range seeds became derivable insist on storing them.
        self._stores_seed = any(
            row[1] == "seed" and row[3]
            for row in conn.execute(f"PRAGMA table_info({step + '_' if step else ''}ranges)")
        )

    # --- opening -----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: Path,
        meta: dict[str, str],
        plan: RangePlan | None = None,
        *,
        steps: dict[str, RangePlan | DatasetPlan] | None = None,
    ) -> Self:
        """Create the ledger atomically: fully initialised, or not there at all.

        A single-step campaign gives its ``plan``; a chain gives its ``steps`` (in
        chain order), each with tables of its own.
        """
        if path.exists():
            raise UserError("a ledger already exists here", file=path)
        if (plan is None) == (steps is None):
            raise ValueError("give a plan or a chain's steps")
        tmp = temp_path_for(path)
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(schema.SHARED_DDL)
            for name in steps or (None,):
                conn.executescript(schema.step_ddl(name))
            with conn:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(schema.SCHEMA_VERSION)),
                        ("created", str(time.time())),
                        *meta.items(),
                    ],
                )
                if plan is not None:
                    conn.execute(_MERGE_GROUPS, _group_numbers(plan))
                for name, step_plan in (steps or {}).items():
                    _insert_groups(conn, name, step_plan)
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        (plan_key(name), plan_json(step_plan)),
                    )
                if steps is not None:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES (?, ?)",
                        (CHAIN_KEY, json.dumps(list(steps))),
                    )
            crash_point("ledger-create")
            conn.close()
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        finally:
            conn.close()
            tmp.unlink(missing_ok=True)
        return cls.open(path)

    @classmethod
    def open(cls, path: Path, readonly: bool = False) -> Self:
        """Open a ledger; read-write, an older ledger is migrated to the current schema."""
        if not path.is_file():
            raise UserError("no campaign ledger here (expected ledger.sqlite)", file=path)
        # Quoted: a '#', '?' or '%' in a directory name is part of the path, not of the URI.
        uri = f"file:{quote(str(path))}?mode={'ro' if readonly else 'rw'}"
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            if not readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            migrations.prepare(conn, readonly, path)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise UserError(f"not a parsl-es ledger: {exc}", file=path) from None
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        return cls(path, conn, readonly)

    def close(self) -> None:
        self._conn.close()

    # --- the steps of a chain ----------------------------------------------------------------
    def chain_steps(self) -> list[str]:
        """The chain's step names in order ([] for a single-step campaign)."""
        raw = self.meta(CHAIN_KEY) if self.step_name is None else None
        return json.loads(raw) if raw else []

    def step(self, name: str) -> Self:
        """The ledger of one step of a chain: its own tables, the same file and connection."""
        if name not in self.chain_steps():
            raise KeyError(f"no step {name!r} in this campaign's chain")
        conn = self._conn
        assert isinstance(conn, sqlite3.Connection)
        return type(self)(self.path, StepConnection(conn, name), self.readonly, name)

    def steps(self) -> list[tuple[str | None, Self]]:
        """``(name, ledger)`` of every step; one unnamed step for a single-step campaign."""
        names = self.chain_steps()
        if not names:
            return [(None, self)]
        return [(name, self.step(name)) for name in names]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def transaction(self) -> Transaction:
        """``with ledger.transaction():`` one ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        return Transaction(self._conn)  # type: ignore[arg-type]

    # --- metadata ----------------------------------------------------------------------------
    def _meta_key(self, key: str) -> str:
        """A step's own keys carry its name; the others are the campaign's."""
        return f"{self.step_name}:{key}" if self.step_name and key in STEP_META else key

    def meta(self, key: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM meta WHERE key=?", (self._meta_key(key),)
        ).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str) -> None:
        """Within the caller's transaction."""
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (self._meta_key(key), value),
        )

    def _delete_meta(self, key: str) -> None:
        """Within the caller's transaction."""
        self._conn.execute("DELETE FROM meta WHERE key=?", (self._meta_key(key),))

    def campaign_json(self) -> dict[str, Any]:
        raw = self.meta("campaign")
        if raw is None:
            raise UserError("ledger has no campaign recorded", file=self.path)
        return json.loads(raw)

    @property
    def schema_version(self) -> int:
        """The schema version of the ledger's file (an old one stays old, read-only)."""
        return migrations.version(self._conn)

    @property
    def plan(self) -> RangePlan | DatasetPlan:
        if self._plan is None and self.step_name is not None:
            raw = self.meta(plan_key(self.step_name))
            if raw is None:
                raise UserError(f"no plan recorded for step {self.step_name}", file=self.path)
            self._plan = plan_from_json(raw)
        if self._plan is None:
            if self.chain_steps():
                raise ValueError("a chain's ledger has a plan per step: use step(name).plan")
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


class Transaction:
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


@contextmanager
def checked_states(conn: sqlite3.Connection) -> Iterator[None]:
    """Statements whose every ``state`` is valid by construction: without the CHECK.

    The ranges table's ``CHECK (state IN (...))`` makes SQLite build a temporary
    table of the six states for every row written (``OpenEphemeral``): more than
    half the cost of a range's INSERT or UPDATE. Every state written inside these
    blocks is a literal of the statement ('running', 'done', 'merged') or a
    ``RangeState``'s value, so it cannot break that check; it is off only inside
    them (one per transaction: turning it off or on re-prepares the statements).
    """
    conn.execute("PRAGMA ignore_check_constraints=1")
    try:
        yield
    finally:
        conn.execute("PRAGMA ignore_check_constraints=0")
