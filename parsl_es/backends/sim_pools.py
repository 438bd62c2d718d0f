"""The worker pools of a simulated machine: which are connected, who is free, who waits.

Workers are counts per pool (no object per worker). Tasks wait in one queue per
node type, as at HTEX's interchange (by priority, in turn within one), and go to
the first pool with a free worker. A lost pool fails its tasks and a new one
starts in its place, as a provider would replace a block. What a task does once
it has a worker (how long it takes, its result) is the machine's
(``simulated.SimulatedBackend``); the pools only hand it over through ``start``.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from parsl_es.backends.base import Call, Priority, WorkLost
from parsl_es.backends.sim_realtime import BusyMeter
from parsl_es.backends.sim_spec import SimNodeType
from parsl_es.records import PoolInfo


@dataclass(eq=False)
class SimPool:
    node_type: str
    index: int
    block: str
    workers: int
    #: Insertion-ordered (a dict, not a set): a lost pool fails its tasks in the order
    #: they started, whatever their objects' ids, so runs stay deterministic.
    running: dict[SimTask, None] = field(default_factory=dict)
    connected: bool = False
    wedged: bool = False

    @property
    def name(self) -> str:
        return f"sim-{self.node_type}-{self.block}"


@dataclass(eq=False)
class SimTask:
    node_type: str
    call: Call
    future: Future
    pool: SimPool | None = None
    worker: int = 0
    durations: list[float] = field(default_factory=list)  # of its ranges, drawn at start


class TaskQueue:
    """A node type's waiting tasks: the lowest priority first, in turn within one."""

    def __init__(self) -> None:
        self._lanes: tuple[deque[SimTask], ...] = tuple(deque() for _ in Priority)

    def append(self, task: SimTask) -> None:
        self._lanes[task.call.priority].append(task)

    def popleft(self) -> SimTask:
        for lane in self._lanes:
            if lane:
                return lane.popleft()
        raise IndexError("pop from an empty task queue")

    def __bool__(self) -> bool:  # (asked before every hand-over: cheaper than a count)
        return any(self._lanes)

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes)


class SimPools:
    """Every node type's pools and queue. ``clock()`` is the machine's time now,
    ``at(when, action)`` schedules on it, ``start(task)`` runs a task that got a worker."""

    def __init__(
        self,
        spec: dict[str, SimNodeType],
        clock: Callable[[], float],
        at: Callable[[float, Callable[[], None]], None],
        start: Callable[[SimTask], None],
    ) -> None:
        self.spec = spec
        self._clock = clock
        self._at = at
        self._start = start
        self._blocks = itertools.count()
        self.queues: dict[str, TaskQueue] = {nt: TaskQueue() for nt in spec}
        self.by_type: dict[str, list[SimPool]] = {nt: [] for nt in spec}
        self._free: dict[str, deque[SimPool]] = {nt: deque() for nt in spec}
        workers = sum(max(s.workers, s.pools) for s in spec.values())
        self.busy = BusyMeter(workers, clock())  # how busy the virtual workers are, from now
        self.blocks_ended: list[tuple[str, str]] = []

    def start_pool(self, node_type: str, index: int, after: float) -> None:
        """Pool ``index`` of the node type (a new block), connecting ``after`` seconds from now."""
        spec = self.spec[node_type]
        share = spec.workers // spec.pools + (1 if index < spec.workers % spec.pools else 0)
        pool = SimPool(node_type, index, str(next(self._blocks)), max(1, share))
        pools = self.by_type[node_type]
        if index < len(pools):
            pools[index] = pool
        else:
            pools.append(pool)
        self._at(self._clock() + after, lambda: self._connect(pool))

    def _connect(self, pool: SimPool) -> None:
        pool.connected = True
        self._free[pool.node_type].append(pool)
        self.dispatch(pool.node_type)

    def enqueue(self, task: SimTask) -> None:
        self.queues[task.node_type].append(task)
        self.dispatch(task.node_type)

    def dispatch(self, node_type: str) -> None:
        """Queued tasks to free workers, in order, while both last."""
        queue, free = self.queues[node_type], self._free[node_type]
        while queue and free:
            pool = free[0]
            if not pool.connected or len(pool.running) >= pool.workers:
                free.popleft()
                continue
            task = queue.popleft()
            task.pool, task.worker = pool, len(pool.running)
            pool.running[task] = None
            self.busy.change(self._clock(), 1)
            if len(pool.running) >= pool.workers:
                free.popleft()
            self._start(task)

    def release(self, task: SimTask) -> None:
        """The task's worker is free again: it takes the next queued task."""
        pool = task.pool
        assert pool is not None
        full = len(pool.running) >= pool.workers
        pool.running.pop(task, None)
        self.busy.change(self._clock(), -1)
        if full and pool.connected:
            self._free[pool.node_type].append(pool)
        self.dispatch(pool.node_type)

    def lose(self, pool: SimPool) -> None:
        """A pool dies: its tasks come back lost, and a new one starts in its place."""
        if not pool.connected:
            return
        pool.connected = False
        running, pool.running = pool.running, {}
        self.busy.change(self._clock(), -len(running))
        for task in running:
            task.future.set_exception(WorkLost(f"worker pool {pool.name} lost"))
        self.start_pool(pool.node_type, pool.index, self.spec[pool.node_type].startup_seconds)

    def end_block(self, node_type: str, block: str) -> bool:
        for p in self.by_type[node_type]:
            if p.block == block and p.connected:
                self.blocks_ended.append((node_type, block))
                self.lose(p)
                return True
        return False

    def connected(self, node_type: str) -> list[PoolInfo]:
        return [
            PoolInfo(pool=p.name, block=p.block, workers=p.workers, tasks=len(p.running))
            for p in self.by_type[node_type]
            if p.connected
        ]
