"""A waiting driver sleeps: no polling where a completion, a stop or a deadline can wake it."""

from __future__ import annotations

import threading
import time

import pytest

from parsl_es import api
from parsl_es.backends.base import Completions, WakingEvent
from parsl_es.backends.simulated import SimFaults, SimNodeType
from parsl_es.engine.timeouts import TimeoutPolicy
from tests.engine_helpers import backend, drive, new_campaign


class CountingWaits:
    """Wraps a simulated backend and counts the engine's waits."""

    def __init__(self, sim):
        self.sim = sim
        self.waits = 0

    def wait(self, completions, timeout):
        self.waits += 1
        self.sim.wait(completions, timeout)

    def __getattr__(self, name):
        return getattr(self.sim, name)


def test_a_driver_waiting_on_long_ranges_wakes_only_for_results(tmp_path):
    """16 ranges of 10 minutes on 4 workers (40 virtual minutes): a 0.2 s poll would
    wake the loop 12,000 times; it wakes for results and deadlines only."""
    out = new_campaign(tmp_path, events=16, events_per_range=1, events_per_merge=8)
    sim = CountingWaits(backend(cpu=SimNodeType(workers=4, range_seconds=600.0)))
    # timeouts far beyond the ranges: no deadline falls inside the campaign
    result = drive(out, sim, timeouts=TimeoutPolicy(factor=5.0, floor=3600.0, ceiling=7200.0))
    assert result.status == "complete", result.message
    assert sim.waits < 100, sim.waits


def test_deadlines_still_wake_a_waiting_driver(tmp_path):
    """A range that never returns is given up at its deadline, not at the next result."""
    out = new_campaign(tmp_path, events=40, events_per_range=1, events_per_merge=40)
    sim = backend(SimFaults(hung_ranges=frozenset({2})), cpu=SimNodeType(workers=4))
    result = drive(out, sim)
    assert result.status == "complete", result.message
    assert result.timeouts >= 1


def test_a_waking_event_ends_a_wait():
    completions = Completions()
    stop = WakingEvent()
    stop.wakes(completions)
    waiter = threading.Thread(target=completions.wait, args=(600.0,))
    waiter.start()
    stop.set()
    waiter.join(60.0)
    assert not waiter.is_alive()  # woken by the stop, not by the 600 s timeout
    assert len(completions) == 0


@pytest.mark.integration
def test_a_driver_waiting_on_long_ranges_uses_under_1_percent_of_a_core(local_session, tmp_path):
    """Real HTEX: while every worker runs a 6 s range, the driver process (all its
    threads, Parsl's included) uses under 1 % of a core."""
    workers = local_session.expected_workers("local")
    spec = {
        "name": "idle",
        "events": workers,
        "events_per_range": 1,
        "events_per_merge": workers,
        "seed": 1,
        "payload": {"name": "emulate", "seconds_per_event": 6.0, "output_format": "npy"},
    }
    results = []
    run = threading.Thread(
        target=lambda: results.append(
            api.run_campaign(spec, tmp_path / "out", session=local_session)
        )
    )
    run.start()
    time.sleep(1.5)  # the ranges have started
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(3.0)  # every worker busy, nothing to do but wait
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    run.join()
    assert results and results[0].status == "complete", results
    assert cpu < 0.01 * wall, f"{cpu:.3f} s of CPU in {wall:.1f} s of waiting"
