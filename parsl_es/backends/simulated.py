"""An in-process backend on a virtual clock: workers, durations and faults as numbers.

It stands in for a machine so that every engine decision can be tested without
Parsl, deterministically and fast, and so that the engine can be driven at the
scale of a whole machine on a laptop. Workers are counts per worker pool (no
thread or object per worker), tasks wait in one queue per node type as at
HTEX's interchange, and time jumps from one event to the next instead of
passing. Results are made up (files are not written, except the small merged
files the engine renames into place: ``made_up``) unless ``run_functions`` is set: then the
real worker functions of ``parsl_es.apps`` run, in this process, at the moment
their task finishes on the virtual clock, and write real files.

With ``clock="real"`` the same machine runs in real time instead, for scale runs
that measure the driver: ``now()`` is the real monotonic clock (anchored at the
epoch time of construction), tasks finish at real times, and everything the
machine does (queues, pools, drawing durations, making up results) happens in
a thread of its own, so the driver thread's CPU time is the engine's alone.
``submit`` only hands the call to that thread; ``wait`` blocks on the
completions without polling. ``busy_seconds()`` and ``all_busy_at`` say how
busy the virtual workers were.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from parsl_es import apps
from parsl_es.backends.base import Call, Completions, DependencyFailed, WorkLost
from parsl_es.backends.made_up import MADE_UP, Made, in_sim_time
from parsl_es.backends.sim_pools import SimPool, SimPools, SimTask
from parsl_es.backends.sim_realtime import RealTime
from parsl_es.backends.sim_spec import EPOCH, NO_FAULTS, SimFaults, SimNodeType, range_durations
from parsl_es.backends.sim_spec import PoolEvent as PoolEvent  # (re-exported, as the others)
from parsl_es.records import PoolInfo, Where

#: Longest the real-time machine's thread runs due events before it lets a query in
#: (a whole machine's bundles finishing together are tens of seconds of work).
SLICE_SECONDS = 0.05


class SimulatedMachineAnswers:
    """What a simulated machine answers from its spec alone, wherever it runs (in this
    process: ``SimulatedBackend``; in a child: ``sim_process``)."""

    spec: dict[str, SimNodeType]

    def expected_workers(self, node_type: str) -> int:
        return self.spec[node_type].workers

    def in_flight_per_worker(self) -> float:
        return max(s.prefetch for s in self.spec.values())

    def lost(self, exc: BaseException) -> bool:
        return isinstance(exc, WorkLost)

    def dependency_failed(self, exc: BaseException) -> bool:
        return isinstance(exc, DependencyFailed)


class SimulatedBackend(SimulatedMachineAnswers):
    """The backend protocol on a virtual clock (see the module docstring)."""

    def __init__(
        self,
        node_types: dict[str, SimNodeType],
        faults: SimFaults = NO_FAULTS,
        *,
        seed: int = 1,
        run_functions: bool = False,
        clock: str = "virtual",
        clock_offset: float | None = None,  # real clock: epoch minus monotonic seconds
    ) -> None:
        if clock not in ("virtual", "real"):
            raise ValueError(f"clock must be 'virtual' or 'real', not {clock!r}")
        self.spec = node_types
        self.faults = faults
        self.run_functions = run_functions
        self._rng = random.Random(seed)
        self._clock = (
            RealTime(self._run_due, self._next_event, clock_offset) if clock == "real" else None
        )
        self._epoch = self._clock.now() if self._clock else EPOCH
        self._now = self._epoch
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._merges_lost = 0
        self.submitted: Counter[str] = Counter()  # tasks submitted, by worker function
        self.workers = SimPools(node_types, lambda: self._now, self._at, self._start)
        self.late_seconds = 0.0  # real time: how far behind its schedule the machine ran
        self.events_run = 0
        self.ranges_run = 0  # ranges started, over all simulate tasks
        self.ranges_finished = 0  # ranges of simulate tasks whose results were handed back
        for nt, spec in node_types.items():
            for i in range(spec.pools):
                self.workers.start_pool(nt, i, spec.startup_seconds)
        for ev in faults.pool_losses:
            self._at(
                self._epoch + ev.at,
                lambda ev=ev: self.workers.lose(self.workers.by_type[ev.node_type][ev.pool]),
            )
        for ev in faults.pool_wedges:
            self._at(
                self._epoch + ev.at,
                lambda ev=ev: _wedge(self.workers.by_type[ev.node_type][ev.pool]),
            )
        if self._clock:
            self._clock.start()

    # --- the backend protocol ---------------------------------------------------------------
    def now(self) -> float:
        return self._clock.now() if self._clock else self._now

    def node_types(self) -> list[str]:
        return list(self.spec)

    def submit(self, node_type: str, call: Call) -> Future:
        self.submitted[call.function] += 1
        task = SimTask(node_type, call, Future())
        if self._clock:  # the machine's thread takes it from here
            self._clock.post((task, None))
            return task.future
        self._accept(task)
        return task.future

    def _accept(self, task: SimTask) -> None:
        call = task.call
        deps = [a for a in (*call.args, *call.inputs) if isinstance(a, Future)]
        waiting = [d for d in deps if not d.done()]
        if not waiting:
            self._ready(task, deps)
            return
        left = [len(waiting)]

        def one_done(_: Future) -> None:
            left[0] -= 1
            if left[0] == 0:
                if self._clock:  # (resolved in whichever thread: queue it for the machine's)
                    self._clock.post((task, lambda: self._ready(task, deps)))
                else:
                    self._ready(task, deps)

        for d in waiting:
            d.add_done_callback(one_done)

    def _machine(self) -> contextlib.AbstractContextManager[Any]:
        """The machine's lock when its own thread runs it (real time); none otherwise."""
        return self._clock.lock if self._clock else contextlib.nullcontext()

    def pools(self, node_type: str) -> list[PoolInfo]:
        with self._machine():
            return self.workers.connected(node_type)

    def end_block(self, node_type: str, block: str) -> bool:
        with self._machine():
            self._now = max(self._now, self.now())
            return self.workers.end_block(node_type, block)

    @property
    def blocks_ended(self) -> list[tuple[str, str]]:
        """``(node type, block)`` of every block ended through ``end_block``."""
        return self.workers.blocks_ended

    def wait(self, completions: Completions, timeout: float) -> None:
        """Run the clock to the next completion, or by ``timeout`` if none comes sooner.

        In real time: block until a completion comes, or ``timeout`` seconds pass.
        """
        if self._clock:
            completions.wait(timeout)
            return
        deadline = self._now + timeout
        while not len(completions):
            if not self._events or self._events[0][0] > deadline:
                self._now = max(self._now, deadline)
                return
            when, _, action = heapq.heappop(self._events)
            self._now = max(self._now, when)
            action()

    def close(self) -> None:
        if self._clock:
            self._clock.close()
        self._events.clear()

    def busy_seconds(self) -> tuple[float, float, int]:
        """``(time, worker-seconds busy since the start, workers busy now)`` at one moment."""
        with self._machine():
            return self.workers.busy.at(self.now())

    @property
    def all_busy_at(self) -> float | None:
        """When every worker first ran a task."""
        return self.workers.busy.all_busy_at

    # --- real time: what the machine's thread runs ------------------------------------------
    def _next_event(self) -> float | None:
        return self._events[0][0] if self._events else None

    def _run_due(
        self, real: float, inbox: deque[tuple[SimTask, Callable[[], None] | None]]
    ) -> bool:
        """Due events first, each at its own time (a worker that finishes takes the next
        queued task then), then what was submitted meanwhile, now. At most
        ``SLICE_SECONDS`` of events per call: whether some are still due (the machine's
        thread lets queries in between, instead of holding its lock through a burst)."""
        until = time.monotonic() + SLICE_SECONDS
        while self._events and self._events[0][0] <= real:
            when, _, action = heapq.heappop(self._events)
            self.late_seconds = max(self.late_seconds, real - when)
            self._now = max(self._now, when)
            self.events_run += 1
            action()
            if time.monotonic() > until:  # (after one event at least: always progress)
                break
        behind = bool(self._events) and self._events[0][0] <= real
        if not behind:
            self._now = max(self._now, real)
        for task, action in inbox:
            if action is None:
                self._accept(task)
            else:
                action()
        return behind

    # --- the machine ---------------------------------------------------------------------
    def _at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (when, next(self._seq), action))

    def _ready(self, task: SimTask, deps: list[Future]) -> None:
        failed = [d for d in deps if d.exception() is not None]
        if failed:
            task.future.set_exception(DependencyFailed(str(failed[0].exception())))
            return
        self.workers.enqueue(task)

    def _start(self, task: SimTask) -> None:
        duration, hangs = self._duration(task)
        if hangs:
            return  # holds its worker until the pool is ended
        if self.faults.task_loss_rate and self._rng.random() < self.faults.task_loss_rate:
            self._at(self._now + duration / 2, lambda: self._finish(task, lost=True))
            return
        started = self._now
        self._at(self._now + duration, lambda: self._finish(task, started=started))

    def _duration(self, task: SimTask) -> tuple[float, bool]:
        spec = self.spec[task.node_type]
        if task.call.function != "simulate_ranges":
            return spec.step_seconds, False
        work = apps.unpack(task.call.args[3])
        self.ranges_run += len(work)
        task.durations = range_durations(spec, work, self.faults, self._rng, task.call.step)
        return sum(task.durations), any(a == 1 and i in self.faults.hung_ranges for i, a in work)

    def _finish(self, task: SimTask, started: float = 0.0, lost: bool = False) -> None:
        pool = task.pool
        if pool is None or task not in pool.running or pool.wedged:
            return  # the pool was lost or wedged meanwhile
        self.workers.release(task)
        if lost:
            task.future.set_exception(WorkLost(f"worker {pool.name}:{task.worker} died"))
            return
        if task.call.function == "merge_group" and self._merges_lost < self.faults.lost_merges:
            self._merges_lost += 1
            task.future.set_exception(WorkLost(f"worker {pool.name}:{task.worker} died"))
            return
        where = Where(
            host=pool.name,
            worker=f"{pool.name}:{task.worker}",
            pool=pool.name,
            block=pool.block,
        )
        try:
            result = self._result(task, where, started)
        except Exception as exc:
            task.future.set_exception(exc)
        else:
            if task.call.function == "simulate_ranges":
                self.ranges_finished += len(task.durations)
            task.future.set_result(result)

    def _result(self, task: SimTask, where: Where, started: float) -> Any:
        args = [a.result() if isinstance(a, Future) else a for a in task.call.args]
        if self.run_functions:
            result = getattr(apps, task.call.function)(*args)
            if task.call.function == "simulate_ranges":  # its ranges took simulated time
                return in_sim_time(result, started, task.durations)
            return result
        made_up = MADE_UP[task.call.function]
        return made_up(
            args, Made(where, started, self._now, task.durations, self.faults, self._rng)
        )


def _wedge(pool: SimPool) -> None:
    """The pool stops answering: its tasks never finish, it still looks connected."""
    pool.wedged = True
