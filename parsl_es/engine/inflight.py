"""Bundles of ranges in flight, per node type, and when the driver stops waiting for each."""

from __future__ import annotations

import itertools
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
    def __init__(self, node_types: Collection[str]) -> None:
        self._bundles: dict[int, Bundle] = {}
        self._ids = itertools.count()
        self._ranges = dict.fromkeys(node_types, 0)
        self._tasks = dict.fromkeys(node_types, 0)

    def add(self, node_type: str, work: list[tuple[int, int]], allowance: float, now: float) -> int:
        bid = next(self._ids)
        self._bundles[bid] = Bundle(node_type, work, allowance, now + allowance)
        self._ranges[node_type] += len(work)
        self._tasks[node_type] += 1
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
        nobody could run it yet, so its deadline moves on.
        """
        expired = []
        for bid, b in self._bundles.items():
            if b.node_type in idle:
                b.deadline = max(b.deadline, now + b.allowance)
            elif now > b.deadline:
                expired.append(bid)
        return [b for b in (self.pop(bid) for bid in expired) if b is not None]

    def earliest_deadline(self) -> float:
        """When ``expire`` may first give up on a bundle (inf: nothing in flight).

        A scan: asked only by a loop about to wait, with no result to handle.
        """
        return min((b.deadline for b in self._bundles.values()), default=float("inf"))

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
