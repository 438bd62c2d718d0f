"""Bundles of ranges in flight, per node type, and when the driver stops waiting for each."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass


@dataclass
class Bundle:
    """Ranges travelling as one task, and when the driver gives up waiting for it."""

    node_type: str
    work: list[tuple[int, int]]  # (range index, attempt)
    allowance: float  # seconds from submission to deadline
    deadline: float


class InFlight:
    """Bundles in flight, with their deadlines in a heap.

    A whole machine holds hundreds of thousands of bundles, and the loop asks for
    the earliest deadline each time it is about to wait: scanning every bundle then
    took about a tenth of the driver's thread at 20,000 workers
    (``benchmarks/scale.py --profile``), and grows with the machine. The heap may
    hold entries of bundles that are gone or whose deadline moved; they are
    skipped when they come up, and the heap is rebuilt when they outnumber the
    bundles.
    """

    def __init__(self, node_types: Collection[str]) -> None:
        self._bundles: dict[int, Bundle] = {}
        self._ids = itertools.count()
        self._ranges = dict.fromkeys(node_types, 0)
        self._tasks = dict.fromkeys(node_types, 0)
        self._due: list[tuple[float, int]] = []  # (deadline, bundle id), a heap
        self._idle_at: dict[str, float] = {}  # last time each node type had nobody connected
        self._latest_allowance: dict[str, float] = {}

    def add(self, node_type: str, work: list[tuple[int, int]], allowance: float, now: float) -> int:
        bid = next(self._ids)
        deadline = now + allowance
        self._bundles[bid] = Bundle(node_type, work, allowance, deadline)
        self._ranges[node_type] += len(work)
        self._tasks[node_type] += 1
        heapq.heappush(self._due, (deadline, bid))
        self._latest_allowance[node_type] = allowance
        if len(self._due) > 2 * len(self._bundles) + 1024:
            self._due = [(b.deadline, i) for i, b in self._bundles.items()]
            heapq.heapify(self._due)
        return bid

    def pop(self, bid: int) -> Bundle | None:
        """The bundle, no longer in flight; None if it was already given up on."""
        bundle = self._bundles.pop(bid, None)
        if bundle is not None:
            self._ranges[bundle.node_type] -= len(bundle.work)
            self._tasks[bundle.node_type] -= 1
        return bundle

    def expire(self, now: float, idle: Collection[str] = ()) -> list[Bundle]:
        """Give up on bundles past their deadline (removed from flight).

        A bundle of a node type with no worker connected (``idle``) is not late:
        nobody could run it yet, so its deadline moves on, to a whole allowance
        after the last time its node type was seen idle.
        """
        for nt in idle:
            self._idle_at[nt] = now
        expired = []
        due = self._due
        while due and due[0][0] < now:
            deadline, bid = heapq.heappop(due)
            b = self._bundles.get(bid)
            if b is None or b.deadline != deadline:
                continue  # gone, or its deadline moved (a later entry stands for it)
            b.deadline = max(deadline, self._idle_at.get(b.node_type, -math.inf) + b.allowance)
            if now > b.deadline:
                self.pop(bid)
                expired.append(b)
            else:
                heapq.heappush(due, (b.deadline, bid))
        return expired

    def earliest_deadline(self) -> float:
        """The earliest deadline in flight (inf: nothing): ``expire`` gives up on no
        bundle before it (a bundle of a node type seen idle may have moved on since)."""
        due, bundles = self._due, self._bundles
        while due:
            deadline, bid = due[0]
            b = bundles.get(bid)
            if b is not None and b.deadline == deadline:
                return deadline
            heapq.heappop(due)
        return math.inf

    def latest_allowance(self, node_type: str) -> float:
        """The allowance of the node type's latest bundle (0: none yet)."""
        return self._latest_allowance.get(node_type, 0.0)

    def tasks(self, node_type: str) -> int:
        return self._tasks.get(node_type, 0)

    def ranges_on(self, node_type: str) -> int:
        return self._ranges.get(node_type, 0)

    def ranges(self) -> int:
        return sum(self._ranges.values())

    def all_tasks(self) -> int:
        return sum(self._tasks.values())

    def __bool__(self) -> bool:
        return bool(self._bundles)
