"""The measured window of a scale run (``benchmarks.scale``): when it starts and ends,
what is sampled at its edges and on the way, and whether the driver kept up after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from itertools import pairwise

import psutil

from benchmarks.common import GcTime
from benchmarks.pyspy import Sampler
from parsl_es.backends.sim_process import SimulatedMachineProcess
from parsl_es.backends.simulated import SimulatedBackend

#: Seconds between the samples of the window's timeline (``timeline``).
TIMELINE_SECONDS = 10.0


class Window:
    """The measured window, sampled by a thread of its own at the right moments.

    The driver thread's CPU is read through its CPU clock
    (``pthread_getcpuclockid``), so a long loop iteration of the driver (a huge
    batch at a large ``W``) cannot move the window's edges.
    """

    def __init__(
        self,
        sim: SimulatedBackend | SimulatedMachineProcess,
        warmup: float,
        seconds: float,
        latest: float,
        counters: list,
        sampler: Sampler | None,
        *,
        mean_range_seconds: float,
    ):
        self.sim = sim
        self.mean_range_seconds = mean_range_seconds  # (a bundle's length: ranges x this)
        self.gc_time = GcTime().start()  # the driver process's collections
        self.catch_up: float | None = None  # see ``_catch_up``
        self.catch_up_limit = 0.0
        self.latest = latest  # the window starts by then even if not every worker is busy
        self.warmup = warmup
        self.seconds = seconds
        self.counters = counters  # the engine's (filled once the dispatcher exists)
        self.sampler = sampler  # py-spy of this process over the window
        self.stop = threading.Event()
        self.start: dict | None = None
        self.end: dict | None = None
        self.samples: list[dict] = []  # the start, every ``TIMELINE_SECONDS``, the end
        self.t0 = sim.now()
        self._clock = time.pthread_getcpuclockid(threading.get_ident())  # the driver's
        self._thread = threading.Thread(target=self._watch, name="scale-window", daemon=True)
        self._thread.start()

    def sample(self) -> dict:
        t, busy, _ = self.sim.busy_seconds()
        return {
            "t": t,
            "cpu": time.clock_gettime(self._clock),
            "process_cpu": time.process_time(),  # all the driver process's threads
            "busy": busy,
            "machine_cpu": _process_cpu(getattr(self.sim, "pid", None)),
            "finished": self.sim.ranges_finished,  # by the machine (a moment later)
            "ranges": sum(c.ranges for c in self.counters),
            "results": self._results(),
            "gc": self.gc_time.total,
            "gc_full": self.gc_time.collections[2],
        }

    def _results(self) -> int:
        """Range results the driver recorded: done, or failed (the machine's ``finished``
        counts both)."""
        return sum(c.ranges + c.failures for c in self.counters)

    def _catch_up(self) -> float | None:
        """Seconds after the window's end until the driver had recorded every result the
        machine finished by then, while it goes on feeding the machine; None if that
        took longer than one bundle's length.

        Bundles that started together finish together: results come in waves of up to
        one bundle per worker, and a window may end in the middle of one. A driver
        that keeps up records a wave before the bundles started with it are over (its
        results come first: completions are handed over in the order they came); one
        that falls behind carries more than a wave, and more every second.
        """
        assert self.end is not None
        bundles = max(1, self.sim.submitted["simulate_ranges"])
        self.catch_up_limit = self.sim.ranges_run / bundles * self.mean_range_seconds
        return catch_up(
            self._results, self.end["finished"], self.sim.now, self.end["t"], self.catch_up_limit
        )

    def _watch(self) -> None:
        while True:
            ready = self.sim.all_busy_at
            now = self.sim.now()
            if ready is None and now - self.t0 >= self.latest:
                ready = now - self.warmup
            if ready is not None and now >= ready + self.warmup:
                break
            time.sleep(0.05)
        self.start = self.sample()
        self.samples.append(self.start)
        if self.sampler is not None:
            self.sampler.start()
        end = self.start["t"] + self.seconds
        while (left := end - self.sim.now()) > 0:
            time.sleep(min(left, TIMELINE_SECONDS))
            self.samples.append(self.sample())
        self.end = self.samples[-1]
        self.catch_up = self._catch_up()
        self.gc_time.stop()
        self.stop.set()


def catch_up(
    recorded: Callable[[], int],
    target: int,
    now: Callable[[], float],
    since: float,
    limit: float,
    poll: float = 0.05,
) -> float | None:
    """Seconds from ``since`` until ``recorded()`` reached ``target``; None if that took
    longer than ``limit`` seconds."""
    while True:
        waited = now() - since
        if recorded() >= target:
            return max(0.0, waited)
        if waited > limit:
            return None
        time.sleep(poll)


def _process_cpu(pid: int | None) -> float | None:
    """CPU seconds (user and system) of another process so far."""
    if pid is None:
        return None
    try:
        c = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return c.user + c.system


def timeline(samples: list[dict], workers: int) -> list[dict]:
    """The window in slices between consecutive samples: where idle time and a backlog
    of unrecorded results came, not only how much over the whole window."""
    rows = []
    for a, b in pairwise(samples):
        span = b["t"] - a["t"]
        if span <= 0:
            continue
        rows.append(
            {
                "t": round(b["t"] - samples[0]["t"], 1),
                "busy_share": round((b["busy"] - a["busy"]) / (workers * span), 4),
                "recorded_per_s": round((b["results"] - a["results"]) / span),
                "unrecorded": b["finished"] - b["results"],
                "driver_cpu_share": round((b["cpu"] - a["cpu"]) / span, 3),
            }
        )
    return rows
