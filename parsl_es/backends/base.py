"""The backend protocol: what the engine needs from wherever work runs.

The engine decides *what* to run and *when*; a backend runs a step's function
on a node type's workers and says what its worker pools look like. Two
implementations: ``ParslBackend`` (a loaded site: one HighThroughputExecutor
per node type) and ``SimulatedBackend`` (in-process, on a virtual clock, for
policy tests and scale runs without a thread per worker). The engine sees only
this protocol, so every decision it makes can be tested without Parsl.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, runtime_checkable

from parsl_es.records import PoolInfo


class WorkLost(Exception):
    """A task's worker, worker pool, node or block went away (not the task's fault).

    Backends raise this (or report their own executor's equivalent through
    ``Backend.lost``) for every task that was running where the loss happened.
    """


class DependencyFailed(Exception):
    """A task could not start because a task it was chained to failed."""


class Priority(IntEnum):
    """Where a task waits in its node type's queue: lower goes first, in turn within one.

    The driver keeps bundles of ranges queued ahead of the workers so none waits for
    work; a merge queued behind them waits about a bundle (``benchmarks.merge_lag``,
    simulated: median 2.7 s at 2,000 workers x 0.1 s, 15 s with 15 s ranges). Merges
    and their validations go first. On HTEX that skips the interchange's queue, not
    the tasks a worker pool has already prefetched (``docs/performance.md``).
    """

    FIRST = 0  # merges and their validations
    IN_TURN = 1  # bundles of ranges, and the campaign's last steps


@dataclass(frozen=True, kw_only=True)
class Call:
    """One step's work for one node type: ``apps.<function>(*args)``, after ``inputs``.

    ``args`` may hold futures of earlier calls (the task starts once they resolve
    and receives their results); ``inputs`` are futures it only waits for.
    """

    function: str
    args: tuple[Any, ...] = ()
    inputs: tuple[Future, ...] = ()
    step: str | None = None  # the chain step it belongs to (a simulated machine's speeds)
    priority: Priority = Priority.IN_TURN


@runtime_checkable
class Backend(Protocol):
    """Where work runs. Every method is called from the engine's one thread."""

    def now(self) -> float:
        """The time, in epoch seconds, on this backend's clock."""

    def node_types(self) -> list[str]:
        """The node types work can be sent to."""

    def submit(self, node_type: str, call: Call) -> Future:
        """Run ``call`` on one worker of ``node_type``; the future holds its return value."""

    def pools(self, node_type: str) -> list[PoolInfo] | None:
        """The node type's connected worker pools now; None when it cannot say.

        None for workers the driver cannot see (a Globus Compute endpoint's): the
        engine then counts ``expected_workers`` as connected.
        """

    def end_block(self, node_type: str, block: str) -> bool:
        """End a block (its tasks come back lost): for a pool that stopped answering."""

    def expected_workers(self, node_type: str) -> int:
        """Workers the node type will have once its blocks run (before any connects)."""

    def in_flight_per_worker(self) -> float:
        """Tasks held per connected worker: one running and the prefetched ones."""

    def lost(self, exc: BaseException) -> bool:
        """Whether a task's exception means its worker, pool, node or block was lost."""

    def dependency_failed(self, exc: BaseException) -> bool:
        """Whether a task's exception means a task it was chained to failed."""

    def wait(self, completions: Completions, timeout: float) -> None:
        """Return once ``completions`` holds something, or after ``timeout`` seconds.

        Futures' done-callbacks put into ``completions``; a simulated backend lets
        its clock run to the next completion instead of sleeping.
        """

    def close(self) -> None:
        """Stop the workers (no orphans left behind)."""


class Completions:
    """Finished futures waiting for the engine's thread, in the order they finished.

    Done-callbacks (on the backend's threads) ``put``; the engine waits through
    ``Backend.wait`` and takes everything at once, so a burst of results is
    recorded in one ledger transaction.
    """

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition()
        self._woken = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def wait(self, timeout: float) -> None:
        """Block until something is there, ``wake`` is called, or ``timeout`` seconds
        (real time) pass."""
        with self._cond:
            if not self._items and not self._woken:
                self._cond.wait(timeout)
            self._woken = False

    def wake(self) -> None:
        """End the current (or next) ``wait`` early, with nothing put: e.g. a stop."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def take(self, most: int) -> list[Any]:
        """Up to ``most`` items, oldest first."""
        with self._cond:
            items = self._items
            if len(items) <= most:
                taken = list(items)
                items.clear()
                return taken
            return [items.popleft() for _ in range(most)]

    def take_all(self) -> list[Any]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)


class WakingEvent(threading.Event):
    """A ``threading.Event`` whose ``set`` also wakes the engine's wait.

    The engine's stop: the engine sleeps until a completion or its next deadline,
    so a stop asked for meanwhile (a signal, a notebook's ``stop()``) must wake it.
    A plain ``Event`` still works as a stop, looked at every second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._wakes: list[Completions] = []

    def wakes(self, completions: Completions) -> None:
        """Wake ``completions``'s waiter whenever this is set."""
        if completions not in self._wakes:
            self._wakes.append(completions)

    def set(self) -> None:
        super().set()
        for completions in self._wakes:
            completions.wake()
