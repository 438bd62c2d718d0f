"""Merges go ahead of queued ranges: a complete group is merged while work goes on.

The driver keeps bundles queued ahead of the workers; a merge queued behind them
waited about a range's length. On the simulated backend (a virtual clock, so the
figures are exact), the same campaign is run with the merge steps queued in turn
and first, and each merge's lag is read back from the ledger: the time from its
group's last range finishing to the merge finishing.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from benchmarks.common import merges_in_turn
from benchmarks.merge_lag import lags
from parsl_es import apps
from parsl_es.backends.base import Call, Priority
from parsl_es.backends.sim_pools import SimTask, TaskQueue
from parsl_es.engine.steps import SIMULATION_CAMPAIGN


def _task(name: str, priority: Priority) -> SimTask:
    return SimTask("cpu", Call(function=name, priority=priority), future=None)  # type: ignore[arg-type]


def test_the_queue_hands_out_the_first_priority_first_and_in_turn_within_one():
    queue = TaskQueue()
    for name, priority in [
        ("r1", Priority.IN_TURN),
        ("m1", Priority.FIRST),
        ("r2", Priority.IN_TURN),
        ("m2", Priority.FIRST),
    ]:
        queue.append(_task(name, priority))
    assert len(queue) == 4
    assert [queue.popleft().call.function for _ in range(4)] == ["m1", "m2", "r1", "r2"]
    assert not queue


def test_the_merge_steps_are_queued_first_and_the_ranges_in_turn():
    priority = {spec.name: spec.priority for spec in SIMULATION_CAMPAIGN}
    assert priority["simulate"] is Priority.IN_TURN
    assert priority["merge"] is priority["validate"] is Priority.FIRST


def test_every_step_queued_first_takes_parsls_resource_specification():
    """HTEX passes the priority to the function too: one without it would fail."""
    for spec in SIMULATION_CAMPAIGN:
        if spec.priority is not Priority.IN_TURN:
            function = getattr(apps, spec.function)
            assert "parsl_resource_specification" in inspect.signature(function).parameters


def both_orders(tmp_path: Path, **machine: float) -> tuple[dict, dict]:
    """One campaign on the simulated machine, merges in turn and merges first: the
    lags ``benchmarks.merge_lag`` reads back from the ledger."""
    args = argparse.Namespace(seed=1, **machine)
    return (
        lags(tmp_path / "in_turn", merges_in_turn(), args),
        lags(tmp_path / "first", SIMULATION_CAMPAIGN, args),
    )


def test_a_merge_goes_ahead_of_the_ranges_already_queued(tmp_path):
    # python -m benchmarks.merge_lag --workers 8 --range-seconds 1 --spread 0.3
    #   --ranges 960 --ranges-per-merge 40: median 1.251 s in turn, 0.245 s first
    before, after = both_orders(
        tmp_path, workers=8, range_seconds=1.0, spread=0.3, ranges=960, ranges_per_merge=40
    )
    assert before["merges"] == after["merges"] == 24
    # in turn: behind the ranges queued for 8 workers (about a range each, 1 s)
    assert before["lag_median_s"] > 0.5, before
    assert after["lag_median_s"] < 0.5 * before["lag_median_s"], (after, before)
    assert after["lag_max_s"] < before["lag_max_s"], (after, before)


@pytest.mark.integration  # starts Parsl (the shared local session)
def test_htex_runs_a_first_task_ahead_of_the_tasks_queued_before_it(local_session):
    """Through the real interchange: ParslBackend passes the priority on."""
    node_type = "local"
    queued = [
        local_session.submit(node_type, Call(function="probe", args=(0.2,))) for _ in range(24)
    ]
    first = local_session.submit(
        node_type, Call(function="probe", args=(0.2,), priority=Priority.FIRST)
    )
    first_started = first.result(timeout=120)[0]
    started_after = sum(f.result(timeout=120)[0] > first_started for f in queued)
    # in turn it would start after all 24; the worker pool holds a few it took before
    assert started_after >= 12, started_after


def test_the_merge_lag_benchmark_compares_both_orders_on_one_campaign(tmp_path):
    in_turn, first = both_orders(
        tmp_path, workers=50, range_seconds=0.1, spread=0.1, ranges=2000, ranges_per_merge=50
    )
    assert first["merges"] == in_turn["merges"] == 40
    assert first["lag_median_s"] < in_turn["lag_median_s"]
    assert first["lag_median_s"] <= first["lag_p90_s"] <= first["lag_max_s"]
