"""Scale by simulation: the real-time simulated backend and ``benchmarks.scale``.

Deterministic assertions only: no figure here depends on how fast this machine
is, except that a few hundred virtual workers of 0.2 s ranges are kept busy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.scale_window import catch_up, timeline
from parsl_es.backends.base import Completions
from parsl_es.backends.simulated import SimFaults, SimNodeType, SimulatedBackend
from tests.engine_helpers import drive, new_campaign, range_attempts

ROOT = Path(__file__).resolve().parents[1]


def test_real_clock_is_rejected_unless_known():
    with pytest.raises(ValueError):
        SimulatedBackend({"cpu": SimNodeType()}, clock="wall")


def test_a_campaign_runs_to_completion_in_real_time(tmp_path):
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=40)
    sim = SimulatedBackend(
        {"cpu": SimNodeType(workers=16, pools=2, range_seconds=0.01, spread=0.2)},
        SimFaults(range_failure_rate=0.05),
        clock="real",
    )
    try:
        result = drive(out, sim, attempts=5)
    finally:
        sim.close()
    assert result.status == "complete", result.message
    assert sorted(range_attempts(out)) == list(range(200))  # every range once
    assert sim.submitted["merge_group"] >= 10
    assert sim.all_busy_at is not None
    assert not sim._clock.alive  # the machine's thread ended with close()


def test_wait_blocks_without_polling():
    """A wait with nothing due costs the waiting thread (almost) no CPU."""
    sim = SimulatedBackend({"cpu": SimNodeType(workers=2)}, clock="real")
    try:
        cpu = time.thread_time()
        sim.wait(Completions(), 0.3)
        assert time.thread_time() - cpu < 0.05
        # and a completion put by another thread ends the wait
        completions = Completions()
        threading.Timer(0.05, completions.put, args=("x",)).start()
        sim.wait(completions, 30.0)
        assert len(completions) == 1
    finally:
        sim.close()


def test_a_query_gets_in_while_the_machine_works_through_a_burst(monkeypatch):
    """A whole machine's bundles finishing together are a long burst of work for the
    simulator; a query (the scale benchmark's sampler, the engine's look at its pools)
    is answered between slices of it, not after it (before: a 60 s timeout)."""
    from parsl_es.backends.base import Call

    n = 100
    sim = SimulatedBackend({"cpu": SimNodeType(workers=n, step_seconds=0.2)}, clock="real")

    def slow_finish(task, started=0.0, lost=False):  # a result that takes 10 ms to make up
        time.sleep(0.01)
        sim.workers.release(task)
        task.future.set_result(None)

    monkeypatch.setattr(sim, "_finish", slow_finish)
    try:
        futures = [sim.submit("cpu", Call(function="merge_group")) for _ in range(n)]
        while not any(f.done() for f in futures):  # the burst (1 s of finishing) has begun
            time.sleep(0.01)
        sim.pools("cpu")
        finished_when_answered = sum(f.done() for f in futures)
        for f in futures:
            f.result(timeout=30)
    finally:
        sim.close()
    assert finished_when_answered < n / 2


def test_virtual_clock_is_unchanged(tmp_path):
    """The default clock still jumps: a campaign of 100 s of work takes no real time."""
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=40)
    sim = SimulatedBackend({"cpu": SimNodeType(workers=2, range_seconds=1.0)})
    result = drive(out, sim)
    assert result.status == "complete"
    assert result.wall_seconds >= 100.0  # on the virtual clock
    _, busy, running = sim.busy_seconds()
    assert running == 0 and 0 < busy <= 2 * result.wall_seconds


def test_scale_benchmark_prints_its_figures_last():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scale",
            "--workers",
            "200",
            "--range-seconds",
            "0.2",
            "--seconds",
            "1.5",
            "--warmup",
            "0.5",
            "--bundle-size",
            "2",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    for key in (
        "workers",
        "range_seconds",
        "utilisation",
        "ranges_per_second",
        "driver_us_per_range",
        "rss_mb",
        "peak_rss_mb",
        "seconds_to_all_busy",
    ):
        assert key in figures
    assert figures["workers"] == 200 and figures["range_seconds"] == 0.2
    assert 0.0 <= figures["utilisation"] <= 1.0
    # a driver that falls behind shows in what it recorded, not in busy workers
    if figures["kept_up"]:
        assert figures["catch_up_s"] <= figures["catch_up_limit_s"]
        expected = figures["busy_share"]
    else:
        expected = figures["busy_share"] * min(1.0, figures["recorded_share"])
    assert figures["utilisation"] == pytest.approx(expected, abs=2e-4)
    assert figures["machine_cpu_share"] > 0  # (its own process)
    # the engine's collector thresholds: no full collection in a window this short
    assert figures["collector"] == "engine" and figures["driver_full_collections"] == 0
    assert 0 <= figures["driver_gc_share"] < 0.5
    assert figures["ranges_finished_in_window"] > 0
    assert 0.8 < figures["recorded_share"] < 1.2  # it keeps up: what finished is recorded
    assert figures["utilisation"] > 0.8  # 1,000 ranges/s: a small fraction of the driver
    assert figures["ranges_per_second"] > 0
    assert figures["driver_us_per_range"] > 0
    (only,) = figures["timeline"]  # a window shorter than a slice: one slice, the window
    assert only["busy_share"] == pytest.approx(figures["busy_share"], abs=2e-4)


def test_the_timeline_shows_where_in_the_window_workers_idled_and_results_waited():
    def at(t, busy, results, finished, cpu):
        return {"t": t, "busy": busy, "results": results, "finished": finished, "cpu": cpu}

    samples = [at(100, 0, 0, 0, 0.0), at(110, 1000, 900, 1000, 5.0), at(120, 1500, 2000, 2000, 14)]
    assert timeline(samples, workers=100) == [
        {
            "t": 10.0,
            "busy_share": 1.0,
            "recorded_per_s": 90,
            "unrecorded": 100,
            "driver_cpu_share": 0.5,
        },
        {
            "t": 20.0,
            "busy_share": 0.5,
            "recorded_per_s": 110,
            "unrecorded": 0,
            "driver_cpu_share": 0.9,
        },
    ]


def test_catch_up_is_the_wait_until_the_driver_recorded_the_window():
    clock = iter(range(100))  # one second a look
    recorded = iter([5, 8, 10, 10])
    assert catch_up(lambda: next(recorded), 10, lambda: next(clock), 0, 30, poll=0) == 2
    clock = iter(range(100))
    assert catch_up(lambda: 0, 1, lambda: next(clock), 0, 3, poll=0) is None  # never
    assert catch_up(lambda: 7, 7, lambda: 5.0, 9.0, 1) == 0.0  # (already there)
