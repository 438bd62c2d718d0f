"""The chaos run, short: kills of every kind during one campaign, then an independent check.

``benchmarks/chaos.py`` is the full run (3,000 ranges, >= 20 worker kills, 3
driver kills); this is the same code with fewer ranges and kills, short range
timeouts (hung ranges and wedged pools are given up on sooner) and short
heartbeats (a killed pool is noticed sooner). What each kind of damage must lead
to is checked on the simulated backend in tests/test_engine.py (lost pools, hung
ranges, wedged pools, lost merges, stop and resume); here real HTEX delivers the
signals and the campaign still ends with every event once.
"""

from __future__ import annotations

import pytest

from benchmarks.chaos import Plan, run_chaos

pytestmark = pytest.mark.integration


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
        site_overrides=("local.heartbeat_period=1", "local.heartbeat_threshold=4"),
    )
    f = run_chaos(plan, tmp_path, say=print)
    assert f.complete, f.notes
    assert (f.worker_kills, f.pool_kills, f.driver_kills, f.wedged_pools) == (3, 1, 1, 1)
    assert f.events_lost == 0 and f.events_duplicated == 0
    assert f.reruns_of_done_ranges == 0, "a range done before a kill was run again"
    assert f.hung_ranges_redone == 1, "the hung range was never given up on"
    assert f.driver_runs == 2, f.notes  # one kill, one resume: no run ended in failure
