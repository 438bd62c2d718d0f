"""The engine on the simulated backend: real ledger, real dispatcher, a virtual machine.

Every decision the dispatcher makes (windows, bundles, retries, timeouts, wedged
pools, merges, the cut-off, stopping and resuming) is exercised here without
Parsl and without waiting: the simulated backend's clock jumps from event to
event, so these runs are deterministic and take well under a second each.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections import Counter

from parsl_es import apps
from parsl_es.backends.simulated import EPOCH, PoolEvent, SimFaults, SimNodeType
from parsl_es.engine.result import RunStatus
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.states import MergeState, Outcome
from tests.engine_helpers import backend, drive, new_campaign, range_attempts
from tests.helpers import assert_every_event_once


def _merged_files(out):
    return sorted(p.name for p in (out / "merged").iterdir())


def test_a_campaign_completes_with_every_range_once(tmp_path):
    out = new_campaign(tmp_path)
    result = drive(out, backend())
    assert result.status is RunStatus.COMPLETE, result.message
    assert (result.ranges_this_run, result.events_this_run, result.merges_this_run) == (
        200,
        400,
        10,
    )
    assert set(range_attempts(out).values()) == {1}
    assert _merged_files(out) == [f"sim.merge-{g:06d}.sim" for g in range(10)]
    # merge attempts wrote beside the range files; each was renamed into merged/
    assert not list((out / "ranges").rglob("*.merge-*"))
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert ledger.summary().complete
    # 8 workers x 1 s ranges: 200 ranges take 25 s of the machine's time
    assert 25.0 <= result.wall_seconds < 27.0


def test_node_types_pull_from_one_queue_at_their_own_speed(tmp_path):
    out = new_campaign(tmp_path, events=2000)
    sim = backend(
        cpu=SimNodeType(workers=4, range_seconds=1.0),
        gpu=SimNodeType(workers=4, range_seconds=0.25),
    )
    result = drive(out, sim)
    assert result.status is RunStatus.COMPLETE
    share = result.per_node_type["gpu"] / result.ranges_this_run
    assert 0.75 <= share <= 0.85  # 4x faster with as many workers: 80 %


def test_workers_the_driver_cannot_see_are_counted_with_their_prefetch(tmp_path):
    """A Globus Compute endpoint's: no pools to ask, so the node type's own count."""
    out = new_campaign(tmp_path)
    sim = backend()  # 8 workers, 2 tasks each in flight
    sim.pools = lambda node_type: None  # what ParslBackend says of an endpoint
    seen = []
    result = drive(out, sim, on_progress=seen.append)
    assert result.status is RunStatus.COMPLETE, result.message
    assert max(p.tasks_in_flight for p in seen) == 16  # not 8: none waits for a round trip


def test_payload_failures_are_retried_within_the_budget(tmp_path):
    out = new_campaign(tmp_path)
    result = drive(out, backend(SimFaults(range_failure_rate=0.2)), attempts=10)
    assert result.status is RunStatus.COMPLETE
    assert result.failures > 10
    attempts = range_attempts(out)
    assert len(attempts) == 200 and max(attempts.values()) > 1


def test_a_permanent_failure_is_fatal_at_once_and_holds_back_only_its_group(tmp_path):
    out = new_campaign(tmp_path)
    result = drive(out, backend(SimFaults(permanent_ranges=frozenset({7}))), attempts=5)
    assert result.status is RunStatus.FAILED
    assert result.fatal_ranges == ["sim-14-15"]
    assert "1 ranges fatal" in result.message
    assert result.merges_this_run == 9  # every group but the first
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert ledger.merge_record(0).state is MergeState.WAITING
        assert ledger.summary().ranges["fatal"] == 1


def test_a_lost_worker_pool_costs_no_attempt(tmp_path):
    out = new_campaign(tmp_path)
    faults = SimFaults(pool_losses=(PoolEvent(at=5.5, node_type="cpu", pool=0),))
    sim = backend(faults, cpu=SimNodeType(workers=8, pools=2, startup_seconds=2.0))
    result = drive(out, sim, attempts=1)  # a lost attempt must not make anything fatal
    assert result.status is RunStatus.COMPLETE
    assert result.failures == 0
    assert max(range_attempts(out).values()) == 2
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert ledger.summary().by_node_type["cpu"]["lost_attempts"] == 4  # 4 workers' ranges


def test_a_hung_range_is_given_up_on_and_redone(tmp_path):
    out = new_campaign(tmp_path)
    result = drive(out, backend(SimFaults(hung_ranges=frozenset({3}))), attempts=1)
    assert result.status is RunStatus.COMPLETE
    assert result.timeouts == 1
    assert range_attempts(out)[3] == 2


def test_a_wedged_pool_is_found_and_its_block_ended(tmp_path):
    out = new_campaign(tmp_path, events=800)
    faults = SimFaults(pool_wedges=(PoolEvent(at=3.5, node_type="cpu", pool=1),))
    sim = backend(faults, cpu=SimNodeType(workers=8, pools=2, startup_seconds=1.0))
    result = drive(out, sim)
    assert result.status is RunStatus.COMPLETE
    assert result.wedged_pools >= 1
    assert sim.blocks_ended and sim.blocks_ended[0][0] == "cpu"
    assert result.timeouts >= 4  # the wedged pool's four ranges, redone elsewhere


def test_a_merge_lost_with_its_worker_runs_again_under_a_new_attempt(tmp_path):
    out = new_campaign(tmp_path)
    result = drive(out, backend(SimFaults(lost_merges=1)))
    assert result.status is RunStatus.COMPLETE
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert ledger.merge_record(0).attempts == 2
    assert _merged_files(out) == [f"sim.merge-{g:06d}.sim" for g in range(10)]


def test_the_cut_off_leaves_nothing_half_done_and_resume_completes(tmp_path):
    out = new_campaign(tmp_path)
    first = drive(out, backend(run_functions=True), allocation_end=EPOCH + 12.0, margin_seconds=2.0)
    assert first.status is RunStatus.WALLTIME, first.message
    assert 0 < first.events_this_run < 400
    second = drive(out, backend(run_functions=True))
    assert second.status is RunStatus.COMPLETE, second.message
    assert first.events_this_run + second.events_this_run >= 400
    assert_every_event_once(out, 0, 400)


def test_a_stop_finishes_what_is_in_flight_and_resume_starts_only_the_rest(tmp_path):
    out = new_campaign(tmp_path)
    stop = threading.Event()

    def stop_half_way(progress):
        if progress.events_done >= 200:
            stop.set()

    first = drive(out, backend(run_functions=True), stop=stop, on_progress=stop_half_way)
    assert first.status is RunStatus.STOPPED
    second = drive(out, backend(run_functions=True))
    assert second.status is RunStatus.COMPLETE
    assert first.ranges_this_run + second.ranges_this_run == 200
    assert set(range_attempts(out).values()) == {1}  # nothing in flight was lost
    assert_every_event_once(out, 0, 400)


def test_a_late_merge_attempt_never_replaces_the_recorded_file(tmp_path):
    out = new_campaign(tmp_path)
    assert drive(out, backend(SimFaults(lost_merges=1), run_functions=True)).status == "complete"
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        [record] = [m for m in ledger.merge_records() if m.attempts == 2]
        group = ledger.plan.group(record.group)
        known = apps.pack(ledger.group_range_outputs(group))
    merged = out / record.output
    before = os.stat(merged)
    # the worker of attempt 1 was reported lost but was still running: it finishes now
    late = apps.merge_group("emulate", {"output_format": "npy"}, group, str(out), known, 1)
    assert late.output.startswith("ranges/") and (out / late.output).exists()
    after = os.stat(merged)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert apps.fileio.adler32(merged) == record.checksum


def test_runs_are_deterministic(tmp_path):
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        out = new_campaign(tmp_path / name)
        faults = SimFaults(
            range_failure_rate=0.05, pool_losses=(PoolEvent(at=4.0, node_type="cpu"),)
        )
        sim = backend(faults, cpu=SimNodeType(workers=8, pools=2, spread=0.3))
        results.append(
            dataclasses.asdict(drive(out, sim, attempts=5)) | {"attempts": range_attempts(out)}
        )
    assert results[0] == results[1]


def test_progress_reports_grow_to_the_whole_campaign(tmp_path):
    out = new_campaign(tmp_path)
    seen = []
    result = drive(out, backend(), on_progress=seen.append)
    assert result.status is RunStatus.COMPLETE
    done = [p.events_done for p in seen]
    assert done == sorted(done) and done[-1] == 400
    assert seen[-1].merges_validated == 10 and seen[-1].ranges_in_flight == 0
    # 8 workers x 1 s ranges of 2 events: 16 events/s once the pipeline runs
    assert any(15.0 <= p.events_per_second <= 17.0 for p in seen[len(seen) // 2 :])
    half = next(p for p in seen if p.events_done >= 200)
    assert half.eta_seconds is not None
    assert abs(half.eta_seconds - (400 - half.events_done) / 16.0) < 2.0


def test_steps_are_declared_a_campaign_without_plots_needs_no_change_to_the_loop(tmp_path):
    from parsl_es.engine.dispatcher import Dispatcher, Settings
    from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement

    out = new_campaign(tmp_path)
    sim = backend()
    without_plots = [s for s in SIMULATION_CAMPAIGN if s.function != "plot_campaign"]
    with Ledger.open(out / LEDGER_NAME) as ledger:
        result = Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            payload=("emulate", {"output_format": "npy"}),
            placement=Placement(simulate=["cpu"], merge="cpu", validate="cpu"),
            settings=Settings(attempts=3),
            steps=without_plots,
        ).run()
        assert ledger.meta("campaign_plots_run") is None
    assert result.status is RunStatus.COMPLETE
    assert sim.submitted["plot_campaign"] == 0 and sim.submitted["validate_campaign"] == 1


def test_short_ranges_travel_in_bundles_and_keep_retries_and_progress_per_range(tmp_path):
    """What tests/test_bundling.py shows through real HTEX, decided here by the engine alone."""
    out = new_campaign(tmp_path, events=2000, events_per_range=1, events_per_merge=250)
    seen = []
    sim = backend(
        SimFaults(range_failure_rate=0.005), cpu=SimNodeType(workers=2, range_seconds=0.01)
    )
    result = drive(out, sim, on_progress=seen.append)
    assert result.status is RunStatus.COMPLETE, result.message
    assert result.ranges_this_run == 2000
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        tasks = len(ledger.tasks())
        rows = list(ledger.ranges())
        failed = ledger.attempts()
    per_task = max(Counter(r.task for r in rows).values())
    assert tasks < 2000 / 4 and per_task > 4, (tasks, per_task)
    # a failure in a bundle costs only its own range an attempt
    assert failed and result.failures == len(failed)
    assert {r.index for r in rows if r.attempts > 1} == {a.index for a in failed}
    done = [p.events_done for p in seen]
    assert done == sorted(done) and done[-1] == 2000
    assert any(0 < d < 2000 for d in done)


def test_a_full_ledger_stops_the_run_after_in_flight_work_came_back(tmp_path, monkeypatch):
    import sqlite3

    from parsl_es.ledger import Ledger as LedgerClass

    out = new_campaign(tmp_path)
    record = LedgerClass.record
    calls = []

    def full_after_ten(self, batches, budget):
        calls.append(1)
        if len(calls) > 10:
            exc = sqlite3.OperationalError("database or disk is full")
            exc.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise exc
        return record(self, batches, budget)

    monkeypatch.setattr(LedgerClass, "record", full_after_ten)
    sim = backend()
    result = drive(out, sim)
    assert result.status is RunStatus.NO_SPACE
    assert "ledger" in result.message
    # nothing left running when the driver left: no worker ended half-way through a file
    assert all(not pool.running for pools in sim.workers.by_type.values() for pool in pools)
    monkeypatch.setattr(LedgerClass, "record", record)
    again = drive(out, backend())
    assert again.status is RunStatus.COMPLETE


def test_a_late_result_of_a_bundle_given_up_on_is_recorded_late_and_never_applied(tmp_path):
    out = new_campaign(tmp_path, events=800)
    faults = SimFaults(late_ranges=frozenset({20}), late_seconds=30.0)
    result = drive(out, backend(faults))
    assert result.status is RunStatus.COMPLETE
    assert result.timeouts == 1
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        outcomes = [(a.attempt, a.outcome) for a in ledger.attempts(index=20)]
        [row] = [r for r in ledger.ranges() if r.index == 20]
    # attempt 1 timed out, was redone as attempt 2, and its result came back late after all
    assert outcomes == [(1, Outcome.TIMEOUT), (1, Outcome.LATE)]
    assert row.attempts == 2 and row.output.endswith("attempt-2.sim")


def test_real_functions_on_the_simulated_machine_record_its_durations(tmp_path):
    """With ``run_functions``, ranges run for real (milliseconds) but take the machine's
    time: the ledger says the machine's, so bundle sizes and deadlines follow it."""
    out = new_campaign(tmp_path)
    result = drive(out, backend(run_functions=True))
    assert result.status is RunStatus.COMPLETE
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        durations = [r.finished - r.started for r in ledger.ranges()]
    assert len(durations) == 200
    # SimNodeType's 1 s ranges with their spread: nowhere near a real emulate range
    assert min(durations) > 0.3 and 0.8 < sum(durations) / len(durations) < 1.3
    assert_every_event_once(out, 0, 400)


def test_a_loop_pass_starts_and_records_a_bounded_slice(tmp_path, monkeypatch):
    """A whole machine's window is started, and its results recorded, a slice per pass
    of the loop (with top-ups in between, and no sleep while a top-up is unfinished).
    A top-up starts at most its bound, or as many ranges as came back since the last."""
    import parsl_es.engine.dispatcher as dispatcher
    import parsl_es.engine.simulate as simulate
    from parsl_es.engine.sizing import top_up_limit

    monkeypatch.setattr(simulate, "TOP_UP_RANGES", 5)
    monkeypatch.setattr(dispatcher, "DRAIN_TASKS", 3)
    started: list[int] = []
    original = simulate.SimulateStep.top_up

    def top_up(self, now):
        before, answered = self.feed.cursor, self.answered
        original(self, now)
        started.append(self.feed.cursor - before - top_up_limit(answered, simulate.TOP_UP_RANGES))

    monkeypatch.setattr(simulate.SimulateStep, "top_up", top_up)
    out = new_campaign(tmp_path)
    result = drive(out, backend(SimFaults(range_failure_rate=0.1)))
    assert result.status is RunStatus.COMPLETE
    assert max(started) <= 1  # (a bundle may pass the bound by what it holds)
    assert sorted(range_attempts(out)) == list(range(200))  # every range done, once


def test_pools_running_long_bundles_are_not_taken_for_wedged_while_a_merge_waits(tmp_path):
    """Bundles longer than a merge's allowance: every pool returns nothing for as long as
    one lasts, and a merge queued behind them is slow. Neither means a wedged pool (a
    whole machine of 15 s ranges in bundles of 26 had every pool ended this way)."""
    out = new_campaign(tmp_path, events=2000)
    sim = backend(cpu=SimNodeType(workers=8, pools=2, range_seconds=1.0, spread=0.0))
    result = drive(out, sim, bundle_size=30)
    assert result.status is RunStatus.COMPLETE
    assert result.wedged_pools == 0 and not sim.blocks_ended
    assert result.timeouts == 0
