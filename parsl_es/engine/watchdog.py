"""Worker pools that stopped answering.

A worker pool can wedge and still send heartbeats (e.g. when the process that
holds its shared task table dies): Parsl then never reports its tasks lost. The
driver notices that a pool holding tasks has returned no result for longer than
any task should take, and ends its block; its tasks come back as lost.
"""

from __future__ import annotations

from collections.abc import Iterable

from parsl_es.records import PoolInfo


class PoolWatch:
    """When each worker pool last returned a result."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def result_from(self, pool: str | None, now: float) -> None:
        if pool:
            self._last[pool] = now

    def observe(self, pools: Iterable[PoolInfo], now: float) -> None:
        """Note the pools seen now; a pool without tasks is not waiting on anything."""
        for p in pools:
            if not p.tasks:
                self._last[p.pool] = now
            else:
                self._last.setdefault(p.pool, now)

    def wedged(self, pools: list[PoolInfo], quiet_for: float, now: float) -> list[PoolInfo]:
        """Active pools that hold tasks and have returned nothing for ``quiet_for`` seconds."""
        self.observe(pools, now)
        return [p for p in pools if p.active and p.tasks and now - self._last[p.pool] > quiet_for]
