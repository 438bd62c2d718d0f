"""What every step of a running campaign shares: the ledger, the backend, the policies.

One object, built once per run by the dispatcher and handed to each step, so a
step needs no reference to the dispatcher or to other steps' internals.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsl_es.backends.base import Backend, Call, Completions
from parsl_es.engine.counters import Counters
from parsl_es.engine.cutoff import Cutoff
from parsl_es.engine.estimates import Estimates
from parsl_es.engine.inflight import InFlight
from parsl_es.engine.timeouts import RangeTimeouts
from parsl_es.engine.watchdog import PoolWatch
from parsl_es.ledger import Ledger
from parsl_es.ranges import RangePlan
from parsl_es.records import CampaignVerdict
from parsl_es.states import RetryBudget

log = logging.getLogger("parsl_es.engine")

#: How often in-flight work is checked against its deadlines while results flow anyway,
#: and while work is past its deadline (a slow merge on a pool not yet found wedged). A
#: waiting engine sleeps until the next deadline instead (``Step.next_deadline``).
WATCHDOG_SECONDS = 1.0
#: Deadlines are strict (``now > deadline``): the engine wakes this much after one.
DEADLINE_SLACK_SECONDS = 0.02


@dataclass
class Shared:
    """What every step of a chain shares in one run."""

    no_space: str | None = None  # why the disk is full, once it is
    #: Every range step's bundles in flight: steps sharing a node type share its window.
    range_windows: list[InFlight] = field(default_factory=list)
    #: Each range step's window per node type, as it last sized it.
    windows: dict[str, dict[int, int]] = field(default_factory=dict)
    #: Range steps by the rank each gives each node type (0: its first choice), and
    #: whether each has ranges ready to start: ``ranks[id][node type]``, ``ready[id]``.
    ranks: dict[int, dict[str, int]] = field(default_factory=dict)
    ready: dict[int, bool] = field(default_factory=dict)

    def may_use(self, node_type: str, step: int) -> bool:
        """Whether ``step`` may start ranges on ``node_type`` now: a node type goes first
        to the steps that rank it higher (a CPU node type to generation, before a
        simulation that prefers GPUs), and to the others when those have nothing ready.
        """
        mine = self.ranks[step][node_type]
        return not any(
            ranks.get(node_type, mine) < mine and self.ready.get(other, False)
            for other, ranks in self.ranks.items()
            if other != step
        )

    def tasks_on(self, node_type: str) -> int:
        return sum(w.tasks(node_type) for w in self.range_windows)

    def bundle_allowance_on(self, node_type: str) -> float:
        """The allowance of the node type's latest bundle (0: none yet): how long a
        healthy pool of it may hold bundles and return nothing."""
        return max((w.latest_allowance(node_type) for w in self.range_windows), default=0.0)

    def free_on(self, node_type: str, step: int, window: int) -> int:
        """Tasks ``step`` may add on ``node_type``: the node type's one window (the largest
        any step sized it to: a step with no estimates yet sizes it small) less every
        step's tasks in flight there."""
        sized = self.windows.setdefault(node_type, {})
        sized[step] = window
        return max(sized.values()) - self.tasks_on(node_type)


@dataclass
class EngineContext:
    """One step's view of a run: its ledger, plan, payload, directory, estimates, counts.

    A single-step campaign has one; a chain has one per step, all sharing the
    backend, the completions, the pools, the stop and ``shared``.
    """

    ledger: Ledger
    backend: Backend
    output_dir: Path
    plan: RangePlan
    payload: tuple[str, dict[str, Any]]  # (name, params): every step function's first arguments
    budget: RetryBudget
    estimates: Estimates
    cutoff: Cutoff
    timeouts: RangeTimeouts
    stop: threading.Event
    bundle_size: int | None = None  # fixed ranges per task (benchmarks); None: adaptive
    step: str | None = None  # the chain step's name (None: a single-step campaign)
    keep_range_files: bool = True  # False: a group's range files go once its merge passed
    counters: Counters = field(default_factory=Counters)
    pools: PoolWatch = field(default_factory=PoolWatch)
    completions: Completions = field(default_factory=Completions)
    shared: Shared = field(default_factory=Shared)
    outstanding: set[Future] = field(default_factory=set)  # submitted, not yet finished
    campaign_verdict: CampaignVerdict | None = None

    @property
    def no_space(self) -> str | None:
        return self.shared.no_space

    @no_space.setter
    def no_space(self, why: str | None) -> None:
        self.shared.no_space = why

    def submit(self, step: str, key: Any, node_type: str, call: Call) -> Future:
        """Run ``call`` on ``node_type``; its completion comes back as ``(step, key, future)``."""
        if self.step is not None:
            call = dataclasses.replace(call, step=self.step)
        future = self.backend.submit(node_type, call)
        self.outstanding.add(future)

        def done(f: Future) -> None:
            self.outstanding.discard(f)
            self.completions.put((step, key, f))

        future.add_done_callback(done)
        return future

    def let_in_flight_finish(self, seconds: float) -> None:
        """Wait (bounded) for everything submitted to come back, recording nothing.

        For when the ledger itself cannot commit: ending the workers at once would
        leave half-written files; what comes back now is redone on resume.
        """
        deadline = self.backend.now() + seconds
        while self.outstanding and self.backend.now() < deadline:
            self.backend.wait(self.completions, deadline - self.backend.now())
            self.completions.take_all()

    def disk_full(self, why: str) -> None:
        if not self.no_space:
            self.no_space = why
            log.error("disk full: %s; stopping", why)

    def check_slow_work(self, node_type: str, submitted: list[float], now: float) -> None:
        """A merge or validation running far longer than merges do may sit on a wedged
        pool: end the node type's pools that stopped answering (the work comes back lost,
        and runs again; it is never abandoned, so no late result can overwrite anything).
        """
        allowance = self.timeouts.merge_allowance()
        if any(now - since > allowance for since in submitted):
            # a merge may wait behind bundles; a pool running bundles returns nothing for
            # as long as one lasts (393,216 workers x 15 s: bundles of 26 ranges, 6.5 min,
            # all of them quiet for far longer than a merge's allowance)
            quiet = max(allowance, self.shared.bundle_allowance_on(node_type))
            self.end_wedged_pools(node_type, quiet, now)

    def slow_work_deadline(self, submitted: list[float]) -> float:
        """When ``check_slow_work`` would first find some of this work slow (inf: none)."""
        return min(submitted, default=float("inf")) + self.timeouts.merge_allowance()

    def end_wedged_pools(self, node_type: str, quiet_for: float, now: float) -> None:
        """End the blocks of the node type's pools that hold tasks and stopped answering."""
        for p in self.pools.wedged(self.backend.pools(node_type) or [], quiet_for, now):
            log.error(
                "worker pool %s (block %s of %s) holds %s tasks and returned nothing for "
                "%.0f s: ending its block",
                p.pool,
                p.block,
                node_type,
                p.tasks,
                quiet_for,
            )
            if p.block is not None and self.backend.end_block(node_type, p.block):
                self.counters.wedged_pools += 1


class LostWork:
    """Merges and validations lost with their worker run again, within the budget.

    Not their fault, so it costs no attempt; but work that keeps losing its
    workers stops after ``budget.max_lost`` tries, as ranges do.
    """

    def __init__(self, budget: RetryBudget, backend: Backend, stop: threading.Event) -> None:
        self.budget = budget
        self.backend = backend
        self.stop = stop
        self._lost: dict[Any, int] = {}

    def again(self, exc: BaseException, key: Any) -> bool:
        """Whether work that raised ``exc`` was lost with its worker and may run again."""
        if not self.backend.lost(exc) or self.stop.is_set():
            return False
        self._lost[key] = self._lost.get(key, 0) + 1
        return self._lost[key] <= self.budget.max_lost


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]
