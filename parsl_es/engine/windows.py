"""What each node type of one step may hold now: its workers, pools and window of tasks.

The policies are ``sizing``'s (window sizes, bundle sizes); this keeps their inputs
up to date. Parsl says nothing when a pool connects or goes, so the connected
workers are asked for at most once every ``WORKER_POLL_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Callable

from parsl_es.engine.context import EngineContext
from parsl_es.engine.sizing import bundle_sizer, window_size

#: How often the connected workers of each node type are asked for.
WORKER_POLL_SECONDS = 1.0


class NodeTypeWindows:
    """Per node type of a step: workers and pools connected as last polled, its window."""

    def __init__(self, ctx: EngineContext, node_types: list[str]) -> None:
        self.ctx = ctx
        self.node_types = node_types
        self.window: dict[str, int] = {}  # tasks it may hold in flight
        self.workers: dict[str, int] = {}  # connected now, as last polled
        self.pools: dict[str, int] = {}  # pools with workers, as last polled
        self._polled = float("-inf")

    def poll(self, now: float) -> None:
        """Refresh each node type's connected workers and window, once a second."""
        if now - self._polled < WORKER_POLL_SECONDS and len(self.window) == len(self.node_types):
            return
        self._polled = now
        ctx = self.ctx
        prefetch = ctx.backend.in_flight_per_worker()
        for nt in self.node_types:
            pools = ctx.backend.pools(nt)
            expected = ctx.backend.expected_workers(nt)
            if pools is None:
                # workers this driver cannot see (a Globus Compute endpoint's): the
                # node type's own count, prefetch included, so they never wait for a
                # round trip to the driver between tasks
                workers = expected
            else:
                ctx.pools.observe(pools, now)
                workers = sum(p.workers for p in pools if p.active)
                self.workers[nt] = workers
                self.pools[nt] = sum(1 for p in pools if p.active and p.workers)
            known = ctx.estimates.known(nt)
            self.window[nt] = window_size(workers, expected, known, prefetch)

    def sizer(self, node_type: str, now: float, left: Callable[[], int]) -> Callable[[], int]:
        """The size of each next bundle for ``node_type`` in this top-up (``bundle_sizer``),
        ``left()`` ranges waiting each time."""
        ctx = self.ctx
        fit = ctx.cutoff.ranges_that_fit(node_type, now)  # near the allocation's end
        if ctx.bundle_size is not None:
            fixed = ctx.bundle_size if fit is None else max(1, min(ctx.bundle_size, fit))
            return lambda: fixed
        return bundle_sizer(
            ctx.estimates.ranges(node_type).mean(),
            self.workers.get(node_type) or ctx.backend.expected_workers(node_type),
            self.pools.get(node_type) or 1,  # (an endpoint's: unknown, taken as one)
            ctx.backend.in_flight_per_worker(),
            left,
            fit,
        )

    def short_of_workers(self) -> bool:
        """Fewer workers connected than expected on a node type whose pools the driver
        sees (not an endpoint's)."""
        expected = self.ctx.backend.expected_workers
        return any(n < expected(nt) for nt, n in self.workers.items())

    def idle(self) -> list[str]:
        """Node types with nobody connected, as last polled."""
        return [nt for nt in self.node_types if self.workers.get(nt, 1) == 0]
