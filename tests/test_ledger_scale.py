"""Version 5's reads without visiting every range give what visiting every range gives.

``summary`` and ``resume_state`` read the ranges not merged through a partial index
and the merged ones from per-merge-group counts kept by triggers
(``schema.V5_DDL``); ``reset_for_resume`` checks only the files exactly-once
needs. Each test compares with the reads of a ledger before version 5 (the scans,
``_tallied`` forced false) on small ledgers made through the engine's own write
path. No wall times here: ``benchmarks/ledger_scale.py`` measures them.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path

import pytest

from parsl_es.backends.simulated import EPOCH, SimFaults, SimNodeType
from parsl_es.ledger import LEDGER_NAME, SCHEMA_VERSION, Ledger, schema
from parsl_es.ledger.reads import LedgerReads
from parsl_es.ranges import RangePlan
from parsl_es.states import MergeState, Outcome, RangeState
from tests.engine_helpers import backend, drive, new_campaign, range_attempts
from tests.test_ledger import (
    CAMPAIGN,
    HERE,
    PLAN,
    done,
    fail,
    merged_file,
    record,
    start,
)


def scanned(ledger: Ledger, monkeypatch, what: str):
    """``summary()`` or ``resume_state()`` as a ledger before version 5 reads it."""
    with monkeypatch.context() as m:
        m.setattr(LedgerReads, "_tallied", property(lambda self: False))
        return getattr(ledger, what)()


def same_as_scan(ledger: Ledger, monkeypatch) -> None:
    assert ledger._tallied
    assert ledger.summary() == scanned(ledger, monkeypatch, "summary")
    assert ledger.resume_state() == scanned(ledger, monkeypatch, "resume_state")


def merge(ledger: Ledger, group: int, output: str) -> None:
    attempt = ledger.start_merge(group, "cpu", time.time())
    assert ledger.finish_merge(merged_file(group, attempt, output))


@pytest.fixture
def ledger(tmp_path):
    with Ledger.create(tmp_path / LEDGER_NAME, {"campaign": CAMPAIGN}, PLAN) as led:
        yield led


def test_counts_follow_every_transition_of_ranges_and_merges(tmp_path, ledger, monkeypatch):
    other = HERE.__class__(host="node2", worker="node2:1", slurm_job="78")
    start(ledger, *range(5))
    record(ledger, done(0), done(1), done(2))
    record(ledger, done(3), done(4, started=None), node_type="cpu", where=other)
    same_as_scan(ledger, monkeypatch)
    merge(ledger, 0, "merged/m0")
    s = ledger.summary()
    assert s.ranges["merged"] == 5 and s.events_done == 10
    assert s.by_node_type["cpu"]["hosts"] == 2 and s.by_node_type["cpu"]["batch_jobs"] == 2
    same_as_scan(ledger, monkeypatch)
    start(ledger, 5, 6, 7, 8, node_type="gpu")
    record(ledger, done(5), fail(6, 1), fail(7, 1, Outcome.FATAL), node_type="gpu")
    same_as_scan(ledger, monkeypatch)
    # a stopped driver: the merged file of group 0 is missing, range 5's file too
    (tmp_path / "ranges").mkdir()
    for i in range(5):
        (tmp_path / "ranges" / f"r{i}.root").write_bytes(b"0123456789")
    counts = ledger.reset_for_resume(tmp_path)
    assert counts == {
        "ranges_running": 1,
        "ranges_missing": 1,
        "merges_running": 0,
        "merges_missing": 1,
        "fatal_retried": 1,
    }
    s = ledger.summary()
    assert s.ranges["merged"] == 0 and s.ranges["done"] == 5 and s.merges["waiting"] == 2
    assert s.by_node_type["cpu"]["hosts"] == 2
    same_as_scan(ledger, monkeypatch)
    state = ledger.resume_state()
    assert state.retry == (5, 6, 7, 8) and state.done_per_group == {0: 5}
    merge(ledger, 0, "merged/m0")  # merged again: counted once
    assert ledger.summary().ranges["merged"] == 5
    same_as_scan(ledger, monkeypatch)


def test_reset_for_resume_checks_done_ranges_and_merged_files_only(tmp_path, ledger):
    """A done range with a missing or short file is redone; a merged range's own file is
    not needed (its events are in the merged file, which is checked)."""
    (tmp_path / "ranges").mkdir()
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "m0").write_bytes(b"12345")  # size 5 as recorded
    start(ledger, *range(8))
    record(ledger, *(done(i) for i in range(8)))
    merge(ledger, 0, "merged/m0")  # ranges 0-4 merged: their files are not there at all
    (tmp_path / "ranges" / "r5.root").write_bytes(b"0123456789")
    (tmp_path / "ranges" / "r6.root").write_bytes(b"short")  # the wrong size
    counts = ledger.reset_for_resume(tmp_path)  # r7's file is missing
    assert counts["ranges_missing"] == 2 and counts["merges_missing"] == 0
    states = {r.index: r.state for r in ledger.ranges()}
    assert [states[i] for i in range(8)] == [RangeState.MERGED] * 5 + [
        RangeState.DONE,
        RangeState.READY,
        RangeState.READY,
    ]
    (tmp_path / "merged" / "m0").unlink()  # now the merged file goes: its ranges' files count
    counts = ledger.reset_for_resume(tmp_path)
    assert counts["merges_missing"] == 1 and counts["ranges_missing"] == 5
    assert ledger.summary().ranges["ready"] == 10 - 1


#: Version 6's view of ranges: the state as the row has it.
_V6_RANGE_INFO = re.sub(r"CASE WHEN .*? END AS state", "r.state", schema.RANGE_INFO, flags=re.S)


def write_v6(path: Path, version: str = "6") -> list[str | None]:
    """Take a current ledger back to version 6's layout and contents (the partial index
    of unmerged ranges; ``merged`` written into the rows of done merges' ranges, and the
    view that shows rows as they are); its steps."""
    assert "r.state," in _V6_RANGE_INFO and "CASE" not in _V6_RANGE_INFO
    conn = sqlite3.connect(path)
    raw = conn.execute("SELECT value FROM meta WHERE key='chain_steps'").fetchone()
    steps = json.loads(raw[0]) if raw else [None]
    with conn:
        for step in steps:
            p = f"{step}_" if step else ""
            conn.execute(schema.step_ddl(step, schema.UNMERGED_INDEX_V5))
            conn.execute(
                f"UPDATE {p}ranges SET state='merged' WHERE state='done' AND merge_group IN "
                f"(SELECT group_idx FROM {p}merges WHERE state='done')"
            )
            conn.execute(f"DROP VIEW {p}range_info")
            conn.execute(schema.scoped(_V6_RANGE_INFO.format(temp=""), step))
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    conn.close()
    return steps


def write_v5(path: Path, version: str = "5") -> list[str | None]:
    """Take a current ledger back to version 5's layout (no covering indexes); its steps."""
    steps = write_v6(path, version)
    conn = sqlite3.connect(path)
    with conn:
        for step in steps:
            p = f"{step}_" if step else ""
            conn.execute(f"DROP INDEX {p}merges_states")
            conn.execute(f"DROP INDEX {p}attempts_outcome")
        conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (version,))
    conn.close()
    return steps


def write_v4(path: Path) -> None:
    """Take a current ledger back to version 4's layout (what parsl-es wrote before)."""
    steps = write_v5(path, "4")
    conn = sqlite3.connect(path)
    with conn:
        for step in steps:
            p = f"{step}_" if step else ""
            for trigger in ("merges_done", "merges_undone"):
                conn.execute(f"DROP TRIGGER {p}{trigger}")
            conn.execute(f"DROP INDEX {p}ranges_unmerged")
            conn.execute(f"DROP TABLE {p}merged_tally")
            conn.execute(f"DROP TABLE {p}merged_where")
    conn.close()


def test_a_v4_ledger_reads_read_only_and_migrates_with_its_counts(tmp_path, monkeypatch):
    path = tmp_path / LEDGER_NAME
    with Ledger.create(path, {"campaign": CAMPAIGN}, PLAN) as led:
        start(led, *range(7))
        record(led, *(done(i) for i in range(6)))
        merge(led, 0, "merged/m0")
        fresh = led.summary(), led.resume_state()
    write_v4(path)
    with Ledger.open(path, readonly=True) as led:
        assert led.schema_version == 4 and not led._tallied
        assert (led.summary(), led.resume_state()) == fresh
    with Ledger.open(path) as led:
        assert led.schema_version == SCHEMA_VERSION == 7 and led._tallied
        assert (led.summary(), led.resume_state()) == fresh
        same_as_scan(led, monkeypatch)
        start(led, 7, 8, 9)
        record(led, *(done(i) for i in range(6, 10)))
        merge(led, 1, "merged/m1")  # the triggers work on a migrated ledger
        assert led.summary().ranges["merged"] == 10
        same_as_scan(led, monkeypatch)


def test_a_chain_ledger_has_the_index_counts_and_triggers_per_step(tmp_path, monkeypatch):
    path = tmp_path / LEDGER_NAME
    plans = {
        "gen": PLAN,
        "sim": RangePlan(
            campaign="c", events=20, first_event=0, events_per_range=5, events_per_merge=10, seed=3
        ),
    }
    with Ledger.create(path, {"campaign": CAMPAIGN}, steps=plans) as led:
        gen, sim = led.step("gen"), led.step("sim")
        start(gen, *range(5))
        record(gen, *(done(i) for i in range(5)))
        merge(gen, 0, "merged/m0")
        start(sim, 0, 1)
        record(sim, done(0), done(1))
        merge(sim, 0, "merged/s0")
        assert gen.summary().ranges["merged"] == 5 and sim.summary().ranges["merged"] == 2
        for part in (gen, sim):
            same_as_scan(part, monkeypatch)
    names = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    for step in plans:
        assert f"{step}_ranges_unmerged" not in names  # (version 7)
        assert {
            f"{step}_merged_tally",
            f"{step}_merged_where",
            f"{step}_merges_done",
            f"{step}_merges_undone",
            f"{step}_merges_states",
            f"{step}_attempts_outcome",
        } <= names
    write_v4(path)
    with Ledger.open(path) as led:  # migrated per step
        for _, part in led.steps():
            same_as_scan(part, monkeypatch)
        assert led.step("sim").summary().ranges["merged"] == 2


def test_reads_match_the_scans_after_an_engine_run_with_faults_and_a_resume(tmp_path, monkeypatch):
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=20)
    faults = SimFaults(range_failure_rate=0.2, task_loss_rate=0.05, permanent_ranges={7})
    sim = backend(faults, run_functions=True, cpu=SimNodeType(workers=8, range_seconds=1.0))
    drive(out, sim, allocation_end=EPOCH + 20.0, margin_seconds=1.0)
    with Ledger.open(out / LEDGER_NAME) as led:
        s = led.summary()
        assert s.ranges["merged"] > 0 and s.ranges["ready"] > 0
        same_as_scan(led, monkeypatch)
        for f in sorted((out / "merged").glob("*"))[:1]:
            f.unlink()
        led.reset_for_resume(out)
        same_as_scan(led, monkeypatch)
    drive(out, backend(run_functions=True))
    with Ledger.open(out / LEDGER_NAME) as led:
        same_as_scan(led, monkeypatch)
        assert led.summary().ranges["merged"] == 200


def test_the_step_objects_of_schema_5_are_named_per_step():
    ddl = schema.step_ddl("gen")
    for name in ("attempts_range", "merged_tally_group", "merges_done"):
        assert f"gen_{name}" in ddl
    conn = sqlite3.connect(":memory:")
    conn.executescript(schema.SHARED_DDL)
    for step in (None, "gen", "sim"):  # side by side in one file
        conn.executescript(schema.step_ddl(step))


def test_a_resume_holds_records_only_of_the_merge_groups_still_open(tmp_path):
    """Finished groups (merged and passed) are counted, not loaded: resume start-up and
    memory follow the groups in flight, not the campaign's size."""
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=20)
    sim = backend(run_functions=True, cpu=SimNodeType(workers=8, range_seconds=1.0))
    drive(out, sim, allocation_end=EPOCH + 20.0, margin_seconds=1.0)
    with Ledger.open(out / LEDGER_NAME) as led:
        every = led.merge_records()
        finished = [m for m in every if m.state is MergeState.DONE and m.validation == "passed"]
        state = led.resume_state()
        s = led.summary()
    assert finished and len(finished) < len(every)  # a run cut off half way
    assert {m.group for m in state.merges} == {m.group for m in every} - {m.group for m in finished}
    assert state.merges_done == s.merges.get("done", 0)
    assert state.merges_validated == len(finished) == s.validated.get("passed", 0)
    with Ledger.open(out / LEDGER_NAME, readonly=True) as led:
        assert list(led.passed_groups()) == [m.group for m in finished]
    # and the engine carries on from it: every range once, every group merged once
    assert drive(out, backend(run_functions=True)).status == "complete"
    assert sorted(range_attempts(out)) == list(range(200))


def _plans_of_summary(ledger: Ledger) -> list[str]:
    """SQLite's plan for each statement ``summary()`` runs, in order."""
    plans: list[str] = []
    conn = ledger._conn
    real = ledger._tuples

    def explained(sql: str, *args):  # type: ignore[no-untyped-def]
        plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", *args).fetchall()
        plans.append(" | ".join(row[-1] for row in plan))
        return real(sql, *args)

    ledger._tuples = explained  # type: ignore[method-assign]
    try:
        ledger.summary()
    finally:
        del ledger._tuples
    return plans


def test_status_counts_merges_and_attempts_from_covering_indexes(tmp_path):
    """Version 6: no status read scans the merges' or attempts' wide rows; a v5 ledger
    gains the indexes when it is opened read-write, and reads the same."""
    path = tmp_path / LEDGER_NAME
    with Ledger.create(path, {"campaign": CAMPAIGN}, PLAN) as led:
        start(led, *range(6))
        record(led, *(done(i) for i in range(5)), fail(5, 1, Outcome.LOST))
        merge(led, 0, "merged/m0")
        fresh = led.summary()
    write_v5(path)
    with Ledger.open(path, readonly=True) as led:
        plans = _plans_of_summary(led)
        assert any("SCAN merges" in p and "COVERING" not in p for p in plans)
        assert led.summary() == fresh
    with Ledger.open(path) as led:
        assert led.schema_version == SCHEMA_VERSION == 7
        plans = _plans_of_summary(led)
        assert led.summary() == fresh
    merges = [p for p in plans if "merges" in p and "tally" not in p]
    attempts = [p for p in plans if "attempts" in p]
    assert merges and all(
        "COVERING INDEX merges_states" in p or _reads_open_groups(p) for p in merges
    )
    assert attempts and all("COVERING INDEX attempts_outcome" in p for p in attempts)


def _reads_open_groups(plan: str) -> bool:
    """``schema.OPEN_RANGES``'s plan: the open merge groups found through their states'
    index, their ranges by primary key (no scan of either table)."""
    steps = plan.split(" | ")
    return (
        "SEARCH m USING INDEX merges_states (state=?)" in steps
        and "SEARCH r USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)" in steps
        and not any(s.split(" ")[:2] in (["SCAN", "m"], ["SCAN", "r"]) for s in steps)
    )


def test_unmerged_ranges_are_read_through_the_open_merge_groups_not_an_index(tmp_path, monkeypatch):
    """Version 7: no index on ranges to keep up on each range's result, and no write to
    a range's row when its group merges (the view shows it merged); status reads the
    ranges not merged through the open groups. A version 6 ledger (rows that say
    merged) loses its index when opened read-write, reading the same before and after,
    and merges go on from there."""
    path = tmp_path / LEDGER_NAME
    with Ledger.create(path, {"campaign": CAMPAIGN}, PLAN) as led:
        start(led, *range(9))
        record(led, *(done(i) for i in range(7)), fail(7, 1, Outcome.LOST))
        merge(led, 0, "merged/m0")
        fresh, resumed = led.summary(), led.resume_state()
    stored = "SELECT state, COUNT(*) FROM ranges GROUP BY state"
    assert dict(sqlite3.connect(path).execute(stored).fetchall())["done"] == 7  # 5 merged
    write_v6(path)
    assert dict(sqlite3.connect(path).execute(stored).fetchall())["merged"] == 5
    indexes = "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='ranges'"
    with Ledger.open(path, readonly=True) as led:
        assert led.schema_version == 6
        assert (led.summary(), led.resume_state()) == (fresh, resumed)
    with Ledger.open(path) as led:
        assert led.schema_version == 7
        assert not led._conn.execute(indexes).fetchall()
        assert (led.summary(), led.resume_state()) == (fresh, resumed)
        same_as_scan(led, monkeypatch)
        plans = _plans_of_summary(led)
    assert not any("SCAN ranges" in p or "SCAN range_info" in p for p in plans)
    band = [p for p in plans if "SEARCH r " in p]
    assert len(band) == 2 and all(_reads_open_groups(p) for p in band), plans
    with Ledger.open(path) as led:
        start(led, 7, 9)  # a retry and a fresh one
        record(led, done(7, attempt=2), done(8), done(9))
        merge(led, 1, "merged/m1")
        states = [r.state for r in led.ranges()]
        assert states == [RangeState.MERGED] * 10 and led.summary().ranges["merged"] == 10
        same_as_scan(led, monkeypatch)


def test_a_resume_sweeps_partial_files_only_where_a_writer_can_have_died(tmp_path, monkeypatch):
    """Merged and validation files' directories and the open groups' range directories
    are swept (nested work directories too); a merged group's directory, and that of a
    group none of whose ranges was ever dispatched, are not read at all."""
    from parsl_es import apps, fileio

    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=20)
    sim = backend(cpu=SimNodeType(workers=8, range_seconds=1.0))
    drive(out, sim, allocation_end=EPOCH + 12.0, margin_seconds=1.0)
    with Ledger.open(out / LEDGER_NAME, readonly=True) as led:
        state = led.resume_state()
        plan = led.plan
    open_groups = {m.group for m in state.merges}
    merged = next(g for g in range(plan.n_merges) if g not in open_groups)
    started = next(m.group for m in state.merges if m.first_range < state.cursor)
    never = plan.n_merges - 1
    assert plan.group(never).first_range >= state.cursor, "the campaign should stop part way"
    partial = [
        out / "merged" / ".tmp-1-m.npy",
        out / "validation" / ".tmp-2-v.json",
        apps.group_dir(out, started) / ".tmp-3-r.npy",
        apps.group_dir(out, started) / "work-7" / ".tmp-4-r.npy",
    ]
    kept = apps.group_dir(out, merged) / ".tmp-5-late.npy"  # a late writer's: never read
    for path in (*partial, kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    swept: list[Path] = []
    real = fileio.remove_temp_files
    monkeypatch.setattr(fileio, "remove_temp_files", lambda d: swept.append(d) or real(d))

    drive(out, backend())

    assert not any(p.exists() for p in partial) and kept.exists()
    assert apps.group_dir(out, started) in swept
    assert apps.group_dir(out, merged) not in swept and apps.group_dir(out, never) not in swept
    assert not any(out / "ranges" == d for d in swept)
    with Ledger.open(out / LEDGER_NAME, readonly=True) as led:
        assert led.summary().ranges["merged"] == 200


def test_the_benchmark_reports_its_childs_own_peak_memory_not_its_own():
    """``ru_maxrss`` of a child counts the image it was forked from: every measure of
    ``benchmarks/ledger_scale.py`` read at least the benchmark's own size."""
    import sys

    from benchmarks import ledger_scale

    ballast = bytearray(b"\1") * (300 * 2**20)  # written, so resident
    child = "import json; from benchmarks.ledger_scale import peak_rss_mb as p; "
    child += "print(json.dumps({'peak_rss_mb': p()}))"
    measured = ledger_scale._run([sys.executable, "-c", child], parse=True)
    assert len(ballast) and ledger_scale.peak_rss_mb() > 300
    assert measured["peak_rss_mb"] < 100


def test_the_benchmarks_ledger_has_files_where_resume_looks_and_nowhere_else(tmp_path):
    """``benchmarks/ledger_scale.py`` writes a done merge's file, and a done range's only if
    the range is not merged (3 and 10 left out on purpose): what ``reset_for_resume``
    reads. Merged ranges' rows say done from version 7 on; a build that took them for
    unmerged wrote a file per range and filled the scratch disk at 10^7 ranges."""
    from benchmarks import ledger_scale

    out = tmp_path / "campaign"
    built = ledger_scale.build(out, 20_000)
    with Ledger.open(out / LEDGER_NAME, readonly=True) as led:
        s = led.summary()
    assert s.ranges["merged"] > 0 and s.ranges["done"] > 0
    assert built["files"] == s.merges["done"] - 3 + s.ranges["done"] - 10
    written = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(LEDGER_NAME)]
    assert len(written) == built["files"]
