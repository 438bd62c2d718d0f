"""Ledger transitions: atomic, guarded, and honest about what is on disk."""

from __future__ import annotations

import sqlite3
import time

import pytest

from parsl_es.errors import UserError
from parsl_es.ledger import LOST_FACTOR, Ledger, RangeOutcome
from parsl_es.ranges import RangePlan

PLAN = RangePlan(
    campaign="c", events=20, first_event=0, events_per_range=2, events_per_merge=10, seed=3
)


@pytest.fixture
def ledger(tmp_path):
    led = Ledger.create(
        tmp_path / "ledger.sqlite",
        {
            "campaign": '{"name": "c", "events": 20, "first_event": 0, '
            '"events_per_range": 2, "events_per_merge": 10, "seed": 3}'
        },
        PLAN,
    )
    yield led
    led.close()


def done(idx: int, attempt: int = 1, **kw) -> RangeOutcome:
    args = {
        "output": f"ranges/r{idx}.root",
        "size": 10,
        "checksum": "0000abcd",
        "n_events": 2,
        "started": time.time(),
        "finished": time.time(),
    }
    args.update(kw)
    return RangeOutcome(index=idx, attempt=attempt, outcome="done", **args)


def fail(idx: int, attempt: int, outcome: str = "failed") -> RangeOutcome:
    return RangeOutcome(index=idx, attempt=attempt, outcome=outcome, error="boom")


def test_new_ledger_has_all_ranges_ready_and_merges_waiting(ledger):
    s = ledger.summary()
    assert s.ranges["ready"] == 10 and s.n_ranges == 10
    assert s.merges["waiting"] == 2
    assert ledger.next_untouched() == 0


def test_create_refuses_existing_and_leaves_no_temp(tmp_path, ledger):
    with pytest.raises(UserError):
        Ledger.create(ledger.path, {}, PLAN)
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_range_lifecycle(ledger):
    assert ledger.start_ranges([PLAN.range(0), PLAN.range(1)], "cpu", time.time()) == [1, 1]
    assert ledger.summary().ranges["running"] == 2
    assert ledger.record_outcomes([done(0), fail(1, 1)], max_failures=3) == ["done", "failed"]
    row = dict(next(ledger.range_rows(["done"])))
    assert row["checksum"] == "0000abcd" and row["n_events"] == 2 and row["node_type"] == "cpu"
    assert ledger.start_ranges([PLAN.range(1)], "gpu", time.time()) == [2]
    assert ledger.record_outcomes([done(1, attempt=2)], max_failures=3) == ["done"]
    # failed attempts are kept; a success is its range row (where it ran: its task)
    history = ledger.conn.execute("SELECT outcome FROM attempts WHERE range_idx=1").fetchall()
    assert [h[0] for h in history] == ["failed"]
    row = dict(next(r for r in ledger.range_rows() if r["idx"] == 1))
    assert row["state"] == "done" and row["attempts"] == 2 and row["node_type"] == "gpu"
    assert row["duration"] == pytest.approx(row["finished"] - row["started"])


def test_cannot_start_a_running_or_done_range(ledger):
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    with pytest.raises(RuntimeError):
        ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    ledger.record_outcomes([done(0)], max_failures=3)
    with pytest.raises(RuntimeError):
        ledger.start_ranges([PLAN.range(0)], "cpu", time.time())


def test_failed_transaction_rolls_back_everything(ledger):
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    with pytest.raises(RuntimeError):  # range 0 is running: the whole batch is refused
        ledger.start_ranges([PLAN.range(1), PLAN.range(0)], "cpu", time.time())
    assert ledger.summary().ranges["running"] == 1


def test_stale_result_of_an_old_attempt_changes_nothing(ledger):
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    ledger.record_outcomes([fail(0, 1, "lost")], max_failures=3)
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())  # attempt 2
    assert ledger.record_outcomes([done(0, attempt=1)], max_failures=3) == ["stale"]
    assert ledger.summary().ranges["running"] == 1


def test_out_of_attempts_is_fatal_and_lost_workers_do_not_count(ledger):
    r = PLAN.range(0)
    for attempt in (1, 2):
        ledger.start_ranges([r], "cpu", time.time())
        assert ledger.record_outcomes([fail(0, attempt, "lost")], 2) == ["failed"]
    ledger.start_ranges([r], "cpu", time.time())
    assert ledger.record_outcomes([fail(0, 3)], 2) == ["failed"]
    ledger.start_ranges([r], "cpu", time.time())
    assert ledger.record_outcomes([fail(0, 4)], 2) == ["fatal"]
    row = dict(next(ledger.range_rows(["fatal"])))
    assert row["failures"] == 2 and row["lost"] == 2


def test_endless_lost_workers_are_stopped(ledger):
    r = PLAN.range(0)
    states = []
    for attempt in range(1, 2 * LOST_FACTOR + 1):
        ledger.start_ranges([r], "cpu", time.time())
        states += ledger.record_outcomes([fail(0, attempt, "lost")], 2)
    assert states[-1] == "fatal" and states.count("fatal") == 1


def test_permanent_failure_is_fatal_at_once(ledger):
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    assert ledger.record_outcomes([fail(0, 1, "fatal")], 3) == ["fatal"]


def test_merge_marks_ranges_merged(ledger):
    group = PLAN.group(0)
    rs = [PLAN.range(i) for i in group.range_indices]
    ledger.start_ranges(rs, "cpu", time.time())
    ledger.record_outcomes([done(r.index) for r in rs], 3)
    assert len(ledger.group_range_outputs(group)) == 5
    assert ledger.start_merge(0, "cpu", time.time()) == 1
    now = time.time()
    ledger.finish_merge(
        0,
        {
            "host": "h",
            "started": now,
            "finished": now,
            "output": "merged/m0",
            "size": 5,
            "checksum": "00000001",
            "n_events": 10,
        },
    )
    s = ledger.summary()
    assert s.ranges["merged"] == 5 and s.merges["done"] == 1 and s.events_merged == 10
    ledger.record_validation(0, True)
    assert ledger.summary().validated["passed"] == 1


def test_resume_resets_running_and_distrusts_missing_files(tmp_path, ledger):
    (tmp_path / "ranges").mkdir()
    (tmp_path / "ranges" / "r0.root").write_bytes(b"0123456789")  # size 10 as recorded
    ledger.start_ranges([PLAN.range(i) for i in range(3)], "cpu", time.time())
    ledger.record_outcomes([done(0), done(1)], 3)  # r1's file never appears on disk
    counts = ledger.reset_for_resume(tmp_path)
    assert counts["ranges_running"] == 1 and counts["ranges_missing"] == 1
    s = ledger.summary()
    assert s.ranges["done"] == 1 and s.ranges["ready"] == 9


def test_readers_see_state_while_a_writer_holds_the_ledger(ledger):
    ledger.start_ranges([PLAN.range(0)], "cpu", time.time())
    reader = Ledger.open(ledger.path, readonly=True)
    try:
        assert reader.summary().ranges["running"] == 1
        with pytest.raises(sqlite3.OperationalError):
            reader.conn.execute("DELETE FROM ranges")
    finally:
        reader.close()


def test_open_refuses_non_ledgers(tmp_path):
    with pytest.raises(UserError, match="no campaign ledger"):
        Ledger.open(tmp_path / "ledger.sqlite")
    (tmp_path / "ledger.sqlite").write_text("not a database")
    with pytest.raises(UserError, match="not a parsl-es ledger"):
        Ledger.open(tmp_path / "ledger.sqlite")
