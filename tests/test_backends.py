"""The two backends keep the protocol; the Parsl one's internal names exist in the pinned Parsl."""

from __future__ import annotations

import inspect
import threading

import pytest

from parsl_es.backends.base import Backend, Call, Completions, DependencyFailed, WorkLost
from parsl_es.backends.parsl import ParslBackend, check_parsl_internals
from parsl_es.backends.simulated import EPOCH, PoolEvent, SimFaults, SimNodeType, SimulatedBackend


def _protocol_methods() -> set[str]:
    return {n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")}


@pytest.mark.parametrize("cls", [ParslBackend, SimulatedBackend])
def test_both_backends_implement_every_method_of_the_protocol(cls):
    for name in _protocol_methods():
        ours = inspect.signature(getattr(cls, name))
        theirs = inspect.signature(getattr(Backend, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_the_parsl_internals_the_backend_uses_exist_in_the_installed_parsl():
    assert check_parsl_internals() == []


def _call(seconds_key: str = "validate_merge", *args, inputs=()) -> Call:
    return Call(function=seconds_key, args=args, inputs=inputs)


def test_a_task_chained_to_a_failed_one_fails_with_a_dependency_error():
    sim = SimulatedBackend({"cpu": SimNodeType(workers=1, step_seconds=1.0)})
    first = sim.submit("cpu", Call(function="validate_merge", args=()))
    chained = sim.submit("cpu", Call(function="validate_merge", args=(first,)))
    done = Completions()
    first.add_done_callback(done.put)
    sim.wait(done, timeout=10.0)
    # made-up validate_merge needs a merge group: the first task raises, the second never runs
    assert first.exception() is not None
    assert isinstance(chained.exception(), DependencyFailed)
    assert sim.dependency_failed(chained.exception())


def test_a_machine_of_100000_workers_costs_no_thread_and_answers_at_once():
    threads = threading.active_count()
    sim = SimulatedBackend({"cpu": SimNodeType(workers=100_000, pools=782, startup_seconds=30.0)})
    assert sim.pools("cpu") == []  # nobody connected before the blocks start
    assert sim.expected_workers("cpu") == 100_000
    sim.wait(Completions(), timeout=31.0)
    pools = sim.pools("cpu")
    assert len(pools) == 782 and sum(p.workers for p in pools) == 100_000
    assert sim.now() == EPOCH + 31.0
    assert threading.active_count() == threads


def test_a_lost_pool_fails_its_tasks_and_is_replaced_after_start_up():
    faults = SimFaults(pool_losses=(PoolEvent(at=0.5, node_type="cpu"),))
    sim = SimulatedBackend(
        {"cpu": SimNodeType(workers=2, step_seconds=1.0, startup_seconds=0.2)}, faults
    )
    futures = [sim.submit("cpu", Call(function="plot_campaign", args=())) for _ in range(2)]
    done = Completions()
    for f in futures:
        f.add_done_callback(done.put)
    sim.wait(done, timeout=5.0)
    assert all(isinstance(f.exception(), WorkLost) and sim.lost(f.exception()) for f in futures)
    assert sim.pools("cpu") == []  # the replacement is still starting
    sim.wait(Completions(), timeout=1.0)
    assert len(sim.pools("cpu")) == 1 and sim.pools("cpu")[0].block != "0"
    assert sim.end_block("cpu", sim.pools("cpu")[0].block)
    assert sim.blocks_ended


@pytest.mark.integration  # starts Parsl (the shared local session)
def test_parsl_log_keeps_its_start_up_but_no_line_per_task(local_session):
    """Nine lines per task in ``parsl.log`` cost the driver CPU and fill the disk of a
    long campaign; the ledger records every task."""
    import logging
    from pathlib import Path

    from parsl_es.backends.parsl import TASK_LOGGER

    assert logging.getLogger(TASK_LOGGER).level == logging.WARNING
    probe = local_session.app("probe", "local")  # apps.probe: a task that does nothing
    futures = [probe() for _ in range(5)]
    assert all(len(f.result(timeout=120)) == 3 for f in futures)
    log = (Path(local_session.dfk.run_dir) / "parsl.log").read_text()
    assert "Parsl version" in log  # written before the level was set
    for f in futures:
        assert f"Task {f.tid} " not in log
