"""Merges go ahead of queued ranges: a complete group is merged while work goes on.

The driver keeps bundles queued ahead of the workers; a merge queued behind them
waited about a range's length. On the simulated backend (a virtual clock, so the
figures are exact), the same campaign is run with the merge steps queued in turn
and first, and each merge's lag is read back from the ledger: the time from its
group's last range finishing to the merge finishing.
"""

from __future__ import annotations

import dataclasses
import inspect
import statistics
from pathlib import Path

import pytest

from parsl_es import apps
from parsl_es.backends.base import Call, Priority
from parsl_es.backends.sim_pools import SimTask, TaskQueue
from parsl_es.backends.sim_spec import SimNodeType
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.result import RunStatus
from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement, StepSpec
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.states import RangeState
from tests.engine_helpers import SHORT_TIMEOUTS, backend, new_campaign


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


def merge_lags(tmp_path: Path, steps: tuple[StepSpec, ...]) -> list[float]:
    """Each merge's lag (s) behind its group's last range, for one simulated campaign."""
    tmp_path.mkdir()
    out = new_campaign(tmp_path, events=960, events_per_range=1, events_per_merge=40)
    sim = backend(cpu=SimNodeType(workers=8, range_seconds=1.0, spread=0.3))
    with Ledger.open(out / LEDGER_NAME) as ledger:
        spec = ledger.campaign_json()["payload"]
        result = Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            payload=(spec.pop("name"), spec),
            placement=Placement(simulate=["cpu"], merge="cpu", validate="cpu"),
            settings=Settings(attempts=3, timeouts=SHORT_TIMEOUTS),
            steps=steps,
        ).run()
        assert result.status is RunStatus.COMPLETE, result.message
        last: dict[int, float] = {}
        for r in ledger.ranges([RangeState.MERGED]):
            last[r.merge_group] = max(last.get(r.merge_group, 0.0), r.finished)
        merges = ledger.merge_records()
    assert len(merges) == len(last) == 24
    return [m.finished - last[m.group] for m in merges]


def test_a_merge_goes_ahead_of_the_ranges_already_queued(tmp_path):
    in_turn = tuple(dataclasses.replace(s, priority=Priority.IN_TURN) for s in SIMULATION_CAMPAIGN)
    before = merge_lags(tmp_path / "in_turn", in_turn)
    after = merge_lags(tmp_path / "first", SIMULATION_CAMPAIGN)
    # in turn: behind the ranges queued for 8 workers (about a range each, 1 s)
    assert statistics.median(before) > 0.5, before
    assert statistics.median(after) < 0.5 * statistics.median(before), (after, before)
    assert max(after) < max(before), (after, before)


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
    import argparse

    from benchmarks.merge_lag import MERGES_IN_TURN, lags

    args = argparse.Namespace(
        workers=50, range_seconds=0.1, spread=0.1, ranges=2000, ranges_per_merge=50, seed=1
    )
    first = lags(tmp_path / "first", SIMULATION_CAMPAIGN, args)
    in_turn = lags(tmp_path / "in_turn", MERGES_IN_TURN, args)
    assert first["merges"] == in_turn["merges"] == 40
    assert first["lag_median_s"] < in_turn["lag_median_s"]
    assert first["lag_median_s"] <= first["lag_p90_s"] <= first["lag_max_s"]
