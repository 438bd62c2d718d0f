"""The chaos run, short: kills of every kind during one campaign, then an independent check.

``benchmarks/chaos.py`` is the full run (3,000 ranges, >= 20 worker kills, 3
driver kills); this is the same code with fewer ranges and kills, short range
timeouts and slack (hung ranges and wedged pools are given up on sooner) and short
heartbeats (a killed pool is noticed sooner). What each kind of damage must lead
to is checked on the simulated backend in tests/test_engine.py (lost pools, hung
ranges, wedged pools, lost merges, stop and resume); here real HTEX delivers the
signals and the campaign still ends with every event once.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from benchmarks.chaos import Plan, detected_wedged_pools, run_chaos


@pytest.mark.integration
def test_short_chaos_run_loses_nothing_and_doubles_nothing(tmp_path):
    plan = Plan(
        ranges=240,
        events_per_merge=40,
        worker_kills=3,
        pool_kills=1,
        driver_kills=1,
        wedges=1,
        hung_ranges=1,
        seed=3,
        timeout_floor=1,
        timeout_ceiling=3,
        timeout_slack=2,
        site_overrides=("local.heartbeat_period=1", "local.heartbeat_threshold=4"),
    )
    f = run_chaos(plan, tmp_path, say=print)
    assert f.complete, f.notes
    assert (f.worker_kills, f.pool_kills, f.driver_kills, f.wedges_injected) == (3, 1, 1, 1)
    # what the driver detected (its run records), not what was injected
    assert f.wedged_pools >= f.wedges_injected, "the wedged pool was never detected"
    assert f.events_lost == 0 and f.events_duplicated == 0
    assert f.reruns_of_done_ranges == 0, "a range done before a kill was run again"
    assert f.hung_ranges_redone == 1, "the hung range was never given up on"
    assert f.driver_runs == 2, f.notes  # one kill, one resume: no run ended in failure


def test_wedged_pools_are_read_from_the_run_records(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for n, wedged in enumerate([1, 0, 2], start=1):
        (logs / f"run-{n:03d}.json").write_text(json.dumps({"wedged_pools": wedged}))
    assert detected_wedged_pools(tmp_path) == 3
    (logs / "run-004.json").write_text(json.dumps({"status": "complete"}))  # older records
    assert detected_wedged_pools(tmp_path) == 3


STANDIN = Path(__file__).parent.parent / "benchmarks" / "standin_transform.py"


@pytest.mark.integration
def test_chaos_with_transforms_killed_loses_nothing_and_doubles_nothing(tmp_path):
    """Service mode: long-lived transforms SIGKILLed mid-campaign (and a worker too)."""
    standin = [sys.executable, str(STANDIN), "service", "--init-seconds", "1"]
    simulate = shlex.join([*standin, "--seconds-per-event", "0.05", "--channel"])
    plan = Plan(
        ranges=120,
        events_per_merge=40,
        worker_kills=1,
        pool_kills=0,
        driver_kills=0,
        wedges=0,
        hung_ranges=0,
        transform_kills=3,
        seed=5,
        timeout_floor=5,
        timeout_ceiling=20,
        timeout_slack=5,
        payload={"name": "command", "mode": "service", "simulate": simulate + " {channel}"},
        site_overrides=("local.heartbeat_period=1", "local.heartbeat_threshold=4"),
    )
    f = run_chaos(plan, tmp_path, say=print)
    assert f.complete, f.notes
    assert (f.transform_kills, f.worker_kills) == (3, 1)
    assert f.events_lost == 0 and f.events_duplicated == 0
    assert f.reruns_of_done_ranges == 0
    # every killed transform was started again; a killed worker's successor starts its own
    assert f.transform_starts >= f.transform_workers + f.transform_kills, f
    print(f"transform starts {f.transform_starts} on {f.transform_workers} workers")
