"""Ledger transitions: atomic, guarded, and honest about what is on disk.

Every write goes through the methods the engine uses (``start_ranges``,
``record``, the merge transitions): there is no test-only write path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parsl_es import fileio
from parsl_es.cli.main import app
from parsl_es.errors import UserError
from parsl_es.ledger import LEDGER_NAME, SCHEMA_VERSION, Ledger, migrations
from parsl_es.ranges import RangePlan
from parsl_es.records import (
    CampaignVerdict,
    MergedFile,
    MergeVerdict,
    Plots,
    RangeResult,
    TaskOutcomes,
    Where,
)
from parsl_es.states import MergeState, Outcome, RangeState, RetryBudget, Verdict

PLAN = RangePlan(
    campaign="c", events=20, first_event=0, events_per_range=2, events_per_merge=10, seed=3
)
CAMPAIGN = json.dumps(
    {"name": "c", "events": 20, "first_event": 0, "events_per_range": 2, "events_per_merge": 10,
     "seed": 3}
)  # fmt: skip
BUDGET = RetryBudget(attempts=3)
HERE = Where(host="node1", worker="node1:42", slurm_job="77", accelerator="0", pool="p1")


@pytest.fixture
def ledger(tmp_path):
    with Ledger.create(tmp_path / LEDGER_NAME, {"campaign": CAMPAIGN}, PLAN) as led:
        yield led


def start(ledger: Ledger, *indices: int, node_type: str = "cpu") -> list[int]:
    """As the engine starts ranges: those at or past the resume cursor are fresh."""
    cursor = ledger.resume_state().cursor
    return ledger.start_ranges([(node_type, indices)], time.time(), cursor)[0]


def done(idx: int, attempt: int = 1, **kw) -> RangeResult:
    now = time.time()
    args = {
        "output": f"ranges/r{idx}.root",
        "size": 10,
        "checksum": "0000abcd",
        "n_events": 2,
        "started": now - 1.0,
        "finished": now,
    }
    return RangeResult(index=idx, attempt=attempt, outcome=Outcome.DONE, **(args | kw))


def fail(idx: int, attempt: int, outcome: Outcome = Outcome.FAILED) -> RangeResult:
    return RangeResult(
        index=idx, attempt=attempt, outcome=outcome, finished=time.time(), error="boom"
    )


def task(*results: RangeResult, node_type: str = "cpu", where: Where = HERE, setup=None):
    return TaskOutcomes(node_type=node_type, where=where, results=results, setup_seconds=setup)


def record(ledger: Ledger, *results: RangeResult, budget: RetryBudget = BUDGET, **kw):
    """One task's results, as the engine records them; the new state of each."""
    return ledger.record([task(*results, **kw)], budget)[0]


def row(ledger: Ledger, idx: int):
    return next(r for r in ledger.ranges() if r.index == idx)


# --- creating and opening ---------------------------------------------------------------------


def test_new_ledger_has_all_ranges_ready_and_merges_waiting(ledger):
    s = ledger.summary()
    assert s.ranges["ready"] == 10 and s.n_ranges == 10
    assert s.merges["waiting"] == 2 and not s.complete
    state = ledger.resume_state()
    assert state.cursor == 0 and state.retry == () and state.done_per_group == {}
    assert [m.state for m in state.merges] == [MergeState.WAITING] * 2
    assert ledger.schema_version == SCHEMA_VERSION == 7


def test_create_refuses_an_existing_ledger(ledger):
    with pytest.raises(UserError, match="already exists"):
        Ledger.create(ledger.path, {}, PLAN)


def test_create_failing_after_its_temp_file_leaves_no_temp_and_no_ledger(tmp_path, monkeypatch):
    path = tmp_path / LEDGER_NAME
    seen: list[Path] = []

    def failing_replace(src, dst):
        seen.append(Path(src))
        assert Path(src).exists()  # the temporary ledger was really written
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        Ledger.create(path, {"campaign": "{}"}, PLAN)
    assert seen and fileio.is_temp(seen[0])  # it failed after the temp file existed
    assert not seen[0].exists() and not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_context_manager_closes(tmp_path, ledger):
    with Ledger.open(ledger.path) as led:
        assert led.plan == PLAN
    with pytest.raises(sqlite3.ProgrammingError):
        led.meta("campaign")


def test_open_refuses_non_ledgers(tmp_path):
    with pytest.raises(UserError, match="no campaign ledger"):
        Ledger.open(tmp_path / LEDGER_NAME)
    (tmp_path / LEDGER_NAME).write_text("not a database")
    with pytest.raises(UserError, match="not a parsl-es ledger"):
        Ledger.open(tmp_path / LEDGER_NAME)


def test_meta(ledger):
    assert ledger.meta("nothing") is None
    ledger.set_meta("site", "local")
    ledger.set_meta("site", "perlmutter")
    assert ledger.meta("site") == "perlmutter"
    assert ledger.campaign_json()["name"] == "c"


def test_readers_see_state_while_a_writer_holds_the_ledger(ledger):
    start(ledger, 0)
    with Ledger.open(ledger.path, readonly=True) as reader:
        assert reader.summary().ranges["running"] == 1
        assert [r.state for r in reader.ranges()] == [RangeState.RUNNING]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.set_meta("x", "y")


# --- starting ranges --------------------------------------------------------------------------


def test_range_lifecycle(ledger):
    assert start(ledger, 0, 1) == [1, 1]
    assert ledger.summary().ranges["running"] == 2
    assert record(ledger, done(0), fail(1, 1)) == [RangeState.DONE, RangeState.FAILED]
    r0 = next(ledger.ranges([RangeState.DONE]))
    assert (r0.index, r0.checksum, r0.n_events, r0.node_type) == (0, "0000abcd", 2, "cpu")
    assert (r0.host, r0.worker, r0.slurm_job, r0.accelerator) == ("node1", "node1:42", "77", "0")
    assert r0.id == PLAN.range(0).id and r0.merge_group == 0 and r0.task is not None
    assert start(ledger, 1, node_type="gpu") == [2]
    assert record(ledger, done(1, attempt=2), node_type="gpu") == [RangeState.DONE]
    # failed attempts are kept; a success is its range row (where it ran: its task)
    assert [(a.index, a.attempt, a.outcome) for a in ledger.attempts()] == [(1, 1, Outcome.FAILED)]
    r1 = row(ledger, 1)
    assert r1.state is RangeState.DONE and r1.attempts == 2 and r1.node_type == "gpu"
    assert r1.failures == 1 and r1.error is None
    assert r1.duration == pytest.approx(r1.finished - r1.started) == pytest.approx(1.0)


def test_cannot_start_a_running_or_done_range(ledger):
    start(ledger, 0)
    with pytest.raises(RuntimeError, match="not ready"):
        start(ledger, 0)
    record(ledger, done(0))
    with pytest.raises(RuntimeError, match="not ready"):
        start(ledger, 0)


def test_a_refused_retry_rolls_back_the_whole_batch(ledger):
    start(ledger, 0)
    cursor = ledger.resume_state().cursor
    with pytest.raises(RuntimeError):  # range 0 is running: the whole batch is refused
        ledger.start_ranges([("cpu", [1, 2, 0])], time.time(), cursor)
    assert [r.index for r in ledger.ranges()] == [0]  # the fresh ranges were not inserted
    assert ledger.summary().ranges["running"] == 1


def test_a_fresh_range_already_in_the_ledger_is_refused(ledger):
    start(ledger, 0, 1)
    with pytest.raises(RuntimeError, match="already in the ledger"):
        ledger.start_ranges([("cpu", range(1, 2))], time.time(), fresh_from=0)


def test_fresh_and_retried_ranges_in_one_batch(ledger):
    start(ledger, 0, 1)
    record(ledger, fail(0, 1, Outcome.LOST), done(1))
    assert ledger.resume_state().retry == (0,)
    assert start(ledger, 2, 0, 3) == [1, 2, 1]
    assert [(r.index, r.state, r.attempts) for r in ledger.ranges()] == [
        (0, RangeState.RUNNING, 2),
        (1, RangeState.DONE, 1),
        (2, RangeState.RUNNING, 1),
        (3, RangeState.RUNNING, 1),
    ]
    r0 = row(ledger, 0)  # a retry forgets where the last attempt ran
    assert r0.host is None and r0.accelerator is None
    assert r0.error is None and r0.finished is None


def test_a_span_that_reaches_below_the_cursor_starts_its_retries_as_retries(ledger):
    """A ``range`` bundle is one fresh span only if it starts at the cursor or past it."""
    start(ledger, 0, 1)
    record(ledger, fail(0, 1, Outcome.LOST), done(1))
    cursor = ledger.resume_state().cursor
    assert ledger.start_ranges([("gpu", range(3, 5)), ("cpu", range(0, 1))], 1.0, cursor) == [
        [1, 1],
        [2],
    ]
    with pytest.raises(RuntimeError, match="not ready"):  # 1 is done: not a fresh range
        ledger.start_ranges([("cpu", range(1, 3))], 2.0, cursor)
    assert [(r.index, r.attempts, r.node_type) for r in ledger.ranges()] == [
        (0, 2, "cpu"),
        (1, 1, "cpu"),
        (3, 1, "gpu"),
        (4, 1, "gpu"),
    ]


# --- recording results ------------------------------------------------------------------------


def test_one_task_row_per_batch_and_one_transaction_for_all(ledger):
    start(ledger, *range(6))
    gpu = Where(host="node2", worker="node2:7", pool="p2", block="3")
    states = ledger.record(
        [task(done(0), done(1), setup=2.5), task(done(2), fail(3, 1), node_type="gpu", where=gpu)],
        BUDGET,
    )
    assert states == [[RangeState.DONE, RangeState.DONE], [RangeState.DONE, RangeState.FAILED]]
    tasks = ledger.tasks()
    assert [(t.node_type, t.host, t.pool, t.block, t.setup) for t in tasks] == [
        ("cpu", "node1", "p1", None, 2.5),
        ("gpu", "node2", "p2", "3", None),
    ]
    assert {r.index: r.task for r in ledger.ranges([RangeState.DONE])} == {
        0: tasks[0].task,
        1: tasks[0].task,
        2: tasks[1].task,
    }
    assert row(ledger, 2).worker == "node2:7"
    # where a failure ran is kept on its range row, and in its attempt
    assert (row(ledger, 3).host, row(ledger, 3).error) == ("node2", "boom")
    assert ledger.attempts()[0].node_type == "gpu" and ledger.attempts()[0].host == "node2"


def test_a_bad_result_rolls_back_every_batch(ledger):
    start(ledger, 0, 1)
    damaged = RangeResult(index=1, attempt=1, outcome=Outcome.DAMAGED)
    with pytest.raises(ValueError, match="not a result to record"):
        ledger.record([task(done(0)), task(damaged)], BUDGET)
    assert ledger.summary().ranges["running"] == 2
    assert ledger.tasks() == [] and ledger.attempts() == []


def test_stale_result_of_an_old_attempt_changes_nothing(ledger):
    start(ledger, 0, 1)
    record(ledger, fail(0, 1, Outcome.LOST), fail(1, 1, Outcome.TIMEOUT))
    start(ledger, 0, 1)  # attempt 2 of both
    assert record(ledger, done(0, attempt=1), done(1, attempt=2)) == [None, RangeState.DONE]
    assert record(ledger, fail(0, 1)) == [None]  # an old attempt's failure: recorded only
    r0 = row(ledger, 0)
    assert r0.state is RangeState.RUNNING and r0.attempts == 2
    assert (r0.failures, r0.lost) == (0, 1)
    assert [a.outcome for a in ledger.attempts(index=0)] == [Outcome.LOST, Outcome.FAILED]


def test_a_done_result_for_a_range_not_running_is_stale(ledger):
    start(ledger, 0)
    record(ledger, done(0))
    assert record(ledger, done(0)) == [None]  # the same result twice
    assert record(ledger, done(5)) == [None]  # a range that never started
    assert ledger.summary().ranges["done"] == 1


def test_payload_failures_are_fatal_at_the_attempt_limit_and_lost_workers_do_not_count(ledger):
    budget = RetryBudget(attempts=2)
    for attempt in (1, 2):
        start(ledger, 0)
        assert record(ledger, fail(0, attempt, Outcome.LOST), budget=budget) == [RangeState.FAILED]
    start(ledger, 0)
    assert record(ledger, fail(0, 3), budget=budget) == [RangeState.FAILED]
    start(ledger, 0)
    assert record(ledger, fail(0, 4), budget=budget) == [RangeState.FATAL]
    r = next(ledger.ranges([RangeState.FATAL]))
    assert (r.failures, r.lost, r.attempts) == (2, 2, 4)
    with pytest.raises(RuntimeError):  # a fatal range is not retried (until a resume)
        start(ledger, 0)


@pytest.mark.parametrize("outcome", [Outcome.LOST, Outcome.TIMEOUT])
def test_endless_lost_or_timed_out_attempts_are_stopped(ledger, outcome):
    budget = RetryBudget(attempts=2, lost_factor=3)
    states = []
    for attempt in range(1, budget.max_lost + 1):
        start(ledger, 0)
        states += record(ledger, fail(0, attempt, outcome), budget=budget)
    assert states == [RangeState.FAILED] * 5 + [RangeState.FATAL]
    r = row(ledger, 0)
    assert (r.failures, r.lost) == (0, 6)


def test_permanent_failure_is_fatal_at_once(ledger):
    start(ledger, 0)
    assert record(ledger, fail(0, 1, Outcome.FATAL)) == [RangeState.FATAL]
    assert row(ledger, 0).failures == 1


def test_a_late_result_is_recorded_and_never_applied(ledger):
    start(ledger, 0)
    assert record(ledger, fail(0, 1, Outcome.LATE)) == [None]
    r = row(ledger, 0)
    assert r.state is RangeState.RUNNING and (r.failures, r.lost) == (0, 0)
    assert [a.outcome for a in ledger.attempts([Outcome.LATE])] == [Outcome.LATE]


def test_summary_counts_work_and_failures_by_node_type(ledger):
    start(ledger, 0, 1)
    start(ledger, 2, node_type="gpu")
    record(ledger, done(0), fail(1, 1, Outcome.LOST))
    record(ledger, fail(2, 1), node_type="gpu", where=Where(host="g1"))
    start(ledger, 2, node_type="gpu")
    record(ledger, done(2, attempt=2), node_type="gpu", where=Where(host="g1"))
    s = ledger.summary()
    assert s.ranges == {
        "ready": 7, "running": 0, "done": 2, "merged": 0, "failed": 1, "fatal": 0
    }  # fmt: skip
    assert s.events_done == 4
    cpu, gpu = s.by_node_type["cpu"], s.by_node_type["gpu"]
    assert (cpu["ranges"], cpu["hosts"], cpu["batch_jobs"], cpu["lost_attempts"]) == (1, 1, 1, 1)
    assert (gpu["ranges"], gpu["events"], gpu["failed_attempts"]) == (1, 2, 1)
    assert cpu["mean_range_seconds"] == pytest.approx(1.0)


# --- merges -----------------------------------------------------------------------------------


def merged_file(group: int, attempt: int, output: str = "merged/m0") -> MergedFile:
    now = time.time()
    return MergedFile(
        group=group,
        attempt=attempt,
        output=output,
        size=5,
        checksum="00000001",
        n_events=10,
        started=now - 2.0,
        finished=now,
        where=Where(host="h", worker="h:1"),
    )


def simulate_group(ledger: Ledger, group: int) -> None:
    indices = list(PLAN.group(group).range_indices)
    start(ledger, *indices)
    record(ledger, *(done(i) for i in indices))


def test_merge_marks_ranges_merged(ledger):
    simulate_group(ledger, 0)
    assert ledger.group_range_outputs(PLAN.group(0)) == [
        (i, f"ranges/r{i}.root", "0000abcd") for i in range(5)
    ]
    assert ledger.resume_state().done_per_group == {0: 5}
    assert ledger.start_merge(0, "cpu", time.time()) == 1
    assert ledger.merge_is_current(0, 1)
    assert ledger.finish_merge(merged_file(0, 1))
    s = ledger.summary()
    assert s.ranges["merged"] == 5 and s.merges["done"] == 1 and s.events_merged == 10
    m = ledger.merge_record(0)
    assert (m.state, m.output, m.n_events, m.node_type, m.attempts) == (
        MergeState.DONE, "merged/m0", 10, "cpu", 1
    )  # fmt: skip
    assert m.validation is None and not ledger.merge_is_current(0, 1)
    ledger.record_verdict(
        MergeVerdict(group=0, passed=True, n_events=10, started=1.0, finished=2.0)
    )
    m = ledger.merge_record(0)
    assert m.validation is Verdict.PASSED and ledger.summary().validated["passed"] == 1
    with pytest.raises(RuntimeError):  # done: not started again
        ledger.start_merge(0, "cpu", time.time())


def test_a_failed_merge_is_retried_with_a_new_attempt(ledger):
    simulate_group(ledger, 0)
    ledger.start_merge(0, "cpu", time.time())
    assert ledger.fail_merge(0, 1, "merge crashed", time.time())
    m = ledger.merge_record(0)
    assert m.state is MergeState.FAILED and m.error == "merge crashed"
    assert ledger.start_merge(0, "cpu", time.time()) == 2
    assert ledger.merge_record(0).error is None


def test_only_the_current_merge_attempt_is_recorded(ledger):
    simulate_group(ledger, 0)
    ledger.start_merge(0, "cpu", time.time())
    ledger.fail_merge(0, 1, "worker lost", time.time())  # given up on, still running somewhere
    assert ledger.start_merge(0, "cpu", time.time()) == 2
    assert not ledger.merge_is_current(0, 1) and ledger.merge_is_current(0, 2)
    before = ledger.merge_record(0)
    assert not ledger.finish_merge(merged_file(0, 1, "merged/old"))
    assert not ledger.fail_merge(0, 1, "late failure", time.time())
    assert ledger.merge_record(0) == before and ledger.summary().ranges["merged"] == 0
    assert ledger.finish_merge(merged_file(0, 2, "merged/new"))
    assert not ledger.fail_merge(0, 2, "too late", time.time())  # done: no longer current
    assert ledger.merge_record(0).output == "merged/new"
    assert ledger.summary().ranges["merged"] == 5


def test_campaign_verdict_marks_bad_groups_for_resume(tmp_path, ledger):
    for g in (0, 1):
        simulate_group(ledger, g)
        ledger.start_merge(g, "cpu", time.time())
        ledger.finish_merge(merged_file(g, 1, f"merged/m{g}"))
        (tmp_path / "merged").mkdir(exist_ok=True)
        (tmp_path / "merged" / f"m{g}").write_bytes(b"12345")
        ledger.record_verdict(MergeVerdict(group=g, passed=True))
    for i in range(10):
        (tmp_path / "ranges").mkdir(exist_ok=True)
        (tmp_path / "ranges" / f"r{i}.root").write_bytes(b"0123456789")
    worker = Where(worker="w:9")
    ledger.record_campaign_verdict(
        CampaignVerdict(passed=True, started=1.0, finished=2.0, where=worker)
    )
    assert ledger.campaign_passed() and ledger.summary().complete
    assert json.loads(ledger.meta("campaign_validation_run")) == {
        "worker": "w:9", "started": 1.0, "finished": 2.0
    }  # fmt: skip
    ledger.record_campaign_verdict(CampaignVerdict(passed=False, bad_groups={1: "damaged"}))
    assert not ledger.campaign_passed() and not ledger.resume_state().campaign_validated
    m1 = ledger.merge_record(1)
    assert m1.validation is Verdict.FAILED
    counts = ledger.reset_for_resume(tmp_path)  # the bad merged file is redone
    assert counts["merges_missing"] == 1
    assert [m.state for m in ledger.merge_records()] == [MergeState.DONE, MergeState.WAITING]
    assert ledger.summary().ranges == {
        "ready": 0, "running": 0, "done": 5, "merged": 5, "failed": 0, "fatal": 0
    }  # fmt: skip


def test_report_rows(ledger):
    simulate_group(ledger, 0)
    start(ledger, 5)
    record(ledger, fail(5, 1, Outcome.LOST))
    ledger.start_merge(0, "cpu", time.time())
    ledger.finish_merge(merged_file(0, 1))
    ledger.record_verdict(
        MergeVerdict(group=0, passed=False, problems=("a", "b"), started=5.0, finished=6.0,
                     where=Where(worker="v:1"))
    )  # fmt: skip
    ledger.record_plots_run(Plots(files=("physics.png",), started=7.0, finished=8.0))
    rows = ledger.report_rows()
    assert [r.index for r in rows.ranges] == [0, 1, 2, 3, 4]
    assert [(a.index, a.outcome) for a in rows.attempts] == [(5, Outcome.LOST)]
    assert [r.worker for r in rows.merge_runs] == ["h:1"]
    assert [(r.worker, r.started, r.finished) for r in rows.validation_runs] == [
        ("v:1", 5.0, 6.0), (None, None, None), (None, 7.0, 8.0)
    ]  # fmt: skip
    assert ledger.merge_record(0).validation is Verdict.FAILED
    assert rows.merges[0].group == 0 and rows.tasks == ()  # no task paid a set-up


# --- damaged files and resume -----------------------------------------------------------------


def test_damaged_ranges_are_redone_without_counting_a_failure(ledger):
    start(ledger, 0, 1)
    record(ledger, done(0))
    assert ledger.redo_damaged({0: "checksum mismatch", 1: "not done"}, time.time()) == [0]
    r = row(ledger, 0)
    assert r.state is RangeState.READY and r.output is None and r.failures == 0
    assert [(a.outcome, a.error) for a in ledger.attempts([Outcome.DAMAGED])] == [
        (Outcome.DAMAGED, "checksum mismatch")
    ]
    assert ledger.resume_state().retry == (0,)
    assert start(ledger, 0) == [2]


def test_resume_resets_running_and_distrusts_missing_files(tmp_path, ledger):
    (tmp_path / "ranges").mkdir()
    (tmp_path / "ranges" / "r0.root").write_bytes(b"0123456789")  # size 10 as recorded
    start(ledger, 0, 1, 2, 3)
    record(ledger, done(0), done(1), fail(3, 1, Outcome.FATAL))  # r1's file never appears
    ledger.start_merge(1, "cpu", time.time())
    counts = ledger.reset_for_resume(tmp_path)
    assert counts == {
        "ranges_running": 1,
        "ranges_missing": 1,
        "merges_running": 1,
        "merges_missing": 0,
        "fatal_retried": 1,
    }
    s = ledger.summary()
    assert s.ranges["done"] == 1 and s.ranges["ready"] == 9 and s.merges["waiting"] == 2
    state = ledger.resume_state()
    assert state.cursor == 4 and state.retry == (1, 2, 3)
    assert (state.ranges_done, state.events_done, state.done_per_group) == (1, 2, {0: 1})
    assert row(ledger, 3).failures == 0  # a fatal range gets a new budget


# --- crash points -----------------------------------------------------------------------------

_CRASH = """
import sys, time
from pathlib import Path
from parsl_es.ledger import Ledger
with Ledger.open(Path(sys.argv[1])) as led:
    led.start_ranges([("cpu", [0])], time.time(), 0)  # the first commit
    led.set_meta("second", "commit")  # killed before this commit
"""


def test_crash_point_before_commit_loses_only_that_transaction(ledger):
    ledger.close()
    env = {**os.environ, "PARSL_ES_CRASH_AT": "ledger-commit:2"}
    proc = subprocess.run([sys.executable, "-c", _CRASH, str(ledger.path)], env=env, check=False)
    assert proc.returncode == -9
    with Ledger.open(ledger.path) as led:
        assert led.summary().ranges["running"] == 1 and led.meta("second") is None


# --- schema versions and migrations -----------------------------------------------------------

#: parsl-es 0.1.0's layout (schema version 1) without the columns, table and view it
#: grew while it was developed: the oldest ledgers that may be found in the wild.
V1_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE ranges (
    idx INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    first_event INTEGER NOT NULL,
    last_event INTEGER NOT NULL,
    merge_group INTEGER NOT NULL,
    seed INTEGER{seed_required},
    state TEXT NOT NULL CHECK (state IN ('ready','running','done','merged','failed','fatal')),
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0,
    node_type TEXT, host TEXT, worker TEXT, slurm_job TEXT, accelerator TEXT,
    started REAL, finished REAL, duration REAL,
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER,
    error TEXT
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
    output TEXT, size INTEGER, checksum TEXT, n_events INTEGER, error TEXT,
    validation TEXT CHECK (validation IN ('passed','failed')),
    validated_at REAL, validation_error TEXT
);
"""


def write_v1_ledger(path, seed_required: bool = False) -> None:
    """A ledger as parsl-es 0.1.0 left it: group 0 merged and validated, ranges 5-7 begun."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_DDL.format(seed_required=" NOT NULL" if seed_required else ""))
    with conn:
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", "1"), ("created", "1.0"), ("campaign", CAMPAIGN)],
        )
        for g in range(PLAN.n_merges):
            grp = PLAN.group(g)
            conn.execute(
                "INSERT INTO merges (group_idx, first_range, last_range, first_event, last_event, "
                "state, attempts, host, started, finished, output, size, checksum, n_events, "
                "validation) VALUES (?, ?, ?, ?, ?, ?, ?, 'old', 1, 2, ?, 5, 'abc', ?, ?)",
                (
                    g, grp.first_range, grp.last_range, grp.first_event, grp.last_event,
                    "done" if g == 0 else "waiting", 1 if g == 0 else 0,
                    "merged/m0" if g == 0 else None, 10 if g == 0 else None,
                    "passed" if g == 0 else None,
                ),
            )  # fmt: skip
        for i in range(8):
            r = PLAN.range(i)
            state = "merged" if i < 5 else ("done" if i == 5 else "running")
            conn.execute(
                "INSERT INTO ranges (idx, id, first_event, last_event, merge_group, seed, state, "
                "attempts, failures, node_type, host, started, finished, output, size, checksum, "
                "n_events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'cpu', 'old', 1, 2, ?, 10, 'x', ?)",
                (
                    i, r.id, r.first_event, r.last_event, r.merge_group, r.seed, state,
                    2 if i == 7 else 1, 1 if i == 7 else 0,
                    None if state == "running" else f"ranges/r{i}.root",
                    None if state == "running" else 2,
                ),
            )  # fmt: skip
        conn.execute(
            "INSERT INTO attempts (range_idx, attempt, outcome, node_type, finished, error) "
            "VALUES (7, 1, 'failed', 'cpu', 1.5, 'boom')"
        )
    conn.close()


def objects(path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    finally:
        conn.close()


def test_a_v1_ledger_is_migrated_once_on_a_read_write_open(tmp_path, monkeypatch):
    path = tmp_path / LEDGER_NAME
    write_v1_ledger(path)
    with Ledger.open(path) as led:
        assert led.schema_version == SCHEMA_VERSION
        assert led.meta("schema_version") == str(SCHEMA_VERSION)
        state = led.resume_state()
        assert state.cursor == 8 and state.retry == ()
        # (group 0 is merged: counted in the totals, not among the groups still open)
        assert (state.ranges_done, state.events_done, state.done_per_group) == (6, 12, {1: 1})
        s = led.summary()
        assert s.ranges["merged"] == 5 and s.ranges["running"] == 2 and s.validated["passed"] == 1
        assert s.by_node_type["cpu"]["failed_attempts"] == 1
        assert row(led, 0).host == "old" and row(led, 0).task is None
        m0 = led.merge_record(0)
        assert m0.validation is Verdict.PASSED and m0.output == "merged/m0"
    assert {"tasks", "range_info", "transforms"} <= objects(path)
    monkeypatch.setitem(migrations.MIGRATIONS, 1, lambda conn: pytest.fail("migrated twice"))
    monkeypatch.setitem(migrations.MIGRATIONS, 2, lambda conn: pytest.fail("migrated twice"))
    with Ledger.open(path) as led:  # the ledger carries on in the current layout
        led.reset_for_resume(tmp_path)  # no files on disk: everything is redone
        assert start(led, 5, 8) == [2, 1]
        assert record(led, done(5, attempt=2), done(8), setup=1.0) == [RangeState.DONE] * 2
        assert row(led, 8).worker == "node1:42" and led.tasks()[0].setup == 1.0
        assert led.summary().ranges["done"] == 2


def test_a_migrated_ledger_that_requires_seeds_keeps_storing_them(tmp_path):
    path = tmp_path / LEDGER_NAME
    write_v1_ledger(path, seed_required=True)
    with Ledger.open(path) as led:
        led.reset_for_resume(tmp_path)
        assert start(led, 8, 9, 6) == [1, 1, 2]
    conn = sqlite3.connect(path)
    seeds = dict(conn.execute("SELECT idx, seed FROM ranges WHERE idx IN (6, 8, 9)"))
    conn.close()
    assert seeds == {i: PLAN.range(i).seed for i in (6, 8, 9)}


def test_a_v1_ledger_is_read_read_only_without_writing(tmp_path):
    path = tmp_path / LEDGER_NAME
    write_v1_ledger(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with Ledger.open(path, readonly=True) as led:
        assert led.schema_version == 1
        assert led.summary().ranges["merged"] == 5
        assert led.resume_state().cursor == 8
        assert [r.state for r in led.ranges([RangeState.RUNNING])] == [RangeState.RUNNING] * 2
        assert [a.outcome for a in led.attempts()] == [Outcome.FAILED]
        assert led.merge_records()[0].state is MergeState.DONE
        rows = led.report_rows()
        assert len(rows.ranges) == 6 and rows.tasks == () and len(rows.validation_runs) == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not {"tasks", "range_info"} & objects(path)


@pytest.mark.parametrize("readonly", [False, True])
def test_a_ledger_from_a_newer_parsl_es_is_refused(ledger, readonly):
    ledger.set_meta("schema_version", "99")
    with pytest.raises(UserError, match="written by a newer parsl-es"):
        Ledger.open(ledger.path, readonly=readonly)


# --- transforms (service mode) -----------------------------------------------------------------


def test_transform_starts_are_recorded_with_where_they_ran_and_summed_per_worker(ledger, tmp_path):
    from parsl_es.records import TransformStart
    from parsl_es.report import _transform_html, collect

    start(ledger, 0, 1)
    first = TransformStart(started=100.0, init_seconds=20.0, restart=False)
    again = TransformStart(started=150.0, init_seconds=18.0, restart=True)
    died = TransformStart(started=170.0, init_seconds=None, restart=True)
    batch = TaskOutcomes(
        node_type="cpu",
        where=HERE,
        results=(done(0, started=121.0, finished=130.0), done(1, started=169.0, finished=175.0)),
        transform_starts=(first, again, died),
    )
    ledger.record([batch], BUDGET)
    other = Where(host="node2", worker="node2:7", pool="p2")
    late = TaskOutcomes(
        node_type="?",
        where=other,
        results=(),
        transform_starts=(TransformStart(started=101.0, init_seconds=25.0, restart=False),),
    )
    ledger.record([late], BUDGET)  # a late task's transform starts are kept too
    rows = ledger.transform_starts()
    assert [(r.worker, r.started, r.init_seconds, r.restart) for r in rows] == [
        ("node1:42", 100.0, 20.0, False),
        ("node2:7", 101.0, 25.0, False),
        ("node1:42", 150.0, 18.0, True),
        ("node1:42", 170.0, None, True),
    ]
    assert ledger.summary().transforms == {
        "node1:42": {"starts": 3, "restarts": 2, "init_seconds": 38.0, "mean_init_seconds": 19.0},
        "node2:7": {"starts": 1, "restarts": 0, "init_seconds": 25.0, "mean_init_seconds": 25.0},
    }
    page = _transform_html(ledger.summary().transforms)  # the report's table
    assert "<td>node1:42</td><td>3</td><td>2</td><td>38.0</td><td>19.0</td>" in page
    timeline, _ = collect(ledger)
    inits = [(s, d) for s, d, kind in timeline.bars["node1:42"] if kind == "init"]
    assert inits == [(100.0, 20.0), (150.0, 18.0), (170.0, 0.0)]  # one bar per start
    shown = CliRunner().invoke(app, ["status", str(tmp_path)], terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "transforms (service mode) by worker" in shown.output
    line = next(x for x in shown.output.splitlines() if "node1:42" in x)
    cells = [c.strip() for c in line.strip(" │┃").split("│")]
    assert cells == ["node1:42", "3", "2", "38.0", "19.0"], line


def test_a_ledger_without_transforms_reads_as_having_none(tmp_path):
    path = tmp_path / LEDGER_NAME
    write_v1_ledger(path)
    with Ledger.open(path, readonly=True) as led:  # read-only: no migration, a temp table
        assert led.transform_starts() == () and led.summary().transforms == {}


def test_a_v1_ledger_whose_tasks_lack_setup_reads_read_only(tmp_path):
    """A shape 0.1 had while it was developed: a ``tasks`` table without ``setup``."""
    path = tmp_path / LEDGER_NAME
    write_v1_ledger(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE tasks (task INTEGER PRIMARY KEY, node_type TEXT, host TEXT, "
                 "worker TEXT, slurm_job TEXT, accelerator TEXT, pool TEXT, block TEXT, "
                 "recorded REAL)")  # fmt: skip
    conn.commit()
    conn.close()
    with Ledger.open(path, readonly=True) as led:
        rows = led.report_rows()
        assert rows.tasks == () and rows.transforms == ()


@pytest.mark.parametrize(
    "events, first_event, per_range, per_merge",
    [(10, 0, 2, 10), (103, 7, 5, 20), (1, 0, 1, 1), (1000, 10**12, 3, 30)],
)
def test_fresh_ranges_are_written_as_the_plan_numbers_them(
    tmp_path, events, first_event, per_range, per_merge
):
    """Fresh ranges go in as runs of consecutive indices per node type, numbered by
    SQLite: each row equals ``RangePlan.rows`` (the last range cut at the last event)."""
    from parsl_es.ledger.starts import consecutive_runs

    numbers = {
        "events": events,
        "first_event": first_event,
        "events_per_range": per_range,
        "events_per_merge": per_merge,
        "seed": 5,
    }
    plan = RangePlan(campaign="c-1", **numbers)
    campaign = json.dumps({"name": "c-1", **numbers})
    n = plan.n_ranges
    picked = [i for i in range(n) if i % 7 != 3]  # gaps, as a top-up after retries
    node_types = {i: ("gpu" if (i // 4) % 3 == 1 else "cpu") for i in picked}
    runs = list(consecutive_runs((i, node_types[i]) for i in picked))
    assert [i for a, b, _ in runs for i in range(a, b + 1)] == picked
    assert all(node_types[i] == nt for a, b, nt in runs for i in range(a, b + 1))
    # bundles as a top-up makes them (a feed's fresh take is a range), as lists, in
    # reverse order, and empty
    shapes = (lambda a, b: range(a, b + 1), lambda a, b: list(range(a, b + 1)),
              lambda a, b: list(range(b, a - 1, -1)))  # fmt: skip
    bundles = [(nt, shapes[k % 3](a, b)) for k, (a, b, nt) in enumerate(runs)]
    bundles += [("cpu", []), ("gpu", range(0))]
    with Ledger.create(tmp_path / LEDGER_NAME, {"campaign": campaign}, plan) as led:
        attempts = led.start_ranges(bundles, 5.0, 0)
        rows = led._conn.execute(
            "SELECT idx, id, first_event, last_event, merge_group, node_type, state, attempts, "
            "started, seed FROM ranges ORDER BY idx"
        ).fetchall()
    assert attempts == [[1] * len(indices) for _, indices in bundles]
    expected = [(*row, node_types[row[0]], "running", 1, 5.0, None) for row in plan.rows(picked)]
    assert [tuple(r) for r in rows] == expected
    assert rows[-1]["last_event"] == min(rows[-1]["first_event"] + per_range - 1, plan.last_event)
