"""The simulated machine in a child process: the engine drives it as it drives a thread's.

Deterministic assertions only (no figure depends on how fast this machine is).
"""

from __future__ import annotations

import threading
import time

from parsl_es.backends.base import Call, Completions, WorkLost
from parsl_es.backends.sim_process import SimulatedMachineProcess
from parsl_es.backends.simulated import PoolEvent, SimFaults, SimNodeType
from tests.engine_helpers import drive, new_campaign, range_attempts


def test_a_campaign_runs_to_completion_in_a_process(tmp_path):
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=40)
    sim = SimulatedMachineProcess(
        {"cpu": SimNodeType(workers=16, pools=2, range_seconds=0.01, spread=0.2)},
        SimFaults(range_failure_rate=0.05),
    )
    try:
        result = drive(out, sim, attempts=5)
    finally:
        sim.close()
    assert result.status == "complete", result.message
    assert sorted(range_attempts(out)) == list(range(200))  # every range once
    assert sim.submitted["merge_group"] >= 10
    assert sim.submitted["validate_merge"] >= 10  # chained to their merges: resolved here
    assert sim.all_busy_at is not None  # (read before the child stopped)
    assert sim.ranges_run >= 200
    assert len(sim._plans) == 1  # the campaign's plan crossed the pipe once
    assert not sim.alive and sim._proc.exitcode is not None  # the child is gone


def test_faults_cross_the_process_boundary(tmp_path):
    """Lost workers and a lost pool come back as ``WorkLost``; the campaign still ends."""
    out = new_campaign(tmp_path, events=400, events_per_range=2, events_per_merge=40)
    sim = SimulatedMachineProcess(
        {"cpu": SimNodeType(workers=8, pools=2, range_seconds=0.04)},
        # (real time: losses at several moments, so that one finds tasks on its pool
        # however long this loaded machine takes to start the child and the driver)
        SimFaults(
            task_loss_rate=0.1,
            pool_losses=tuple(
                PoolEvent(at=at, node_type="cpu", pool=p)
                for at, p in ((0.3, 0), (0.6, 1), (0.9, 0), (1.2, 1))
            ),
        ),
        seed=3,
    )
    seen: list[BaseException] = []
    lost = sim.lost

    def spy(exc: BaseException) -> bool:
        seen.append(exc)
        return lost(exc)

    sim.lost = spy  # type: ignore[method-assign]
    try:
        result = drive(out, sim, attempts=10)
    finally:
        sim.close()
    assert result.status == "complete", result.message
    assert sorted(range_attempts(out)) == list(range(200))  # every range once
    assert any(type(e) is WorkLost and sim.lost(e) for e in seen)
    why = {str(e).split()[-1] for e in seen if type(e) is WorkLost}
    assert why == {"died", "lost"}  # a worker under a task, and the whole pool


def test_wait_blocks_without_polling():
    """A wait with nothing due costs the waiting thread (almost) no CPU."""
    sim = SimulatedMachineProcess({"cpu": SimNodeType(workers=2)})
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


def test_close_with_tasks_in_flight_leaves_no_child():
    """Tasks still running when the machine closes come back lost; close is idempotent."""
    sim = SimulatedMachineProcess({"cpu": SimNodeType(workers=2, step_seconds=3600.0)})
    futures = [sim.submit("cpu", Call(function="plot_campaign")) for _ in range(5)]
    assert len(sim.pools("cpu")) == 1  # the child is up and has them
    sim.close()
    sim.close()
    assert not sim.alive
    assert all(isinstance(f.exception(0), WorkLost) for f in futures)
    assert isinstance(sim.submit("cpu", Call(function="plot_campaign")).exception(0), WorkLost)


def test_a_dead_child_does_not_hang_the_driver():
    """A child killed under it: what was in flight comes back lost, close still returns."""
    sim = SimulatedMachineProcess({"cpu": SimNodeType(workers=2, step_seconds=3600.0)})
    future = sim.submit("cpu", Call(function="plot_campaign"))
    sim.pools("cpu")
    sim._proc.kill()
    assert isinstance(future.exception(30.0), WorkLost)
    sim.close()
    assert not sim.alive
