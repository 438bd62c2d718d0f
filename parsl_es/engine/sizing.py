"""How much work a node type holds: its window of tasks, and ranges per task.

Every task costs the driver, the interchange and the worker something whatever
it carries. Ranges of a few milliseconds would spend most of the allocation on
that, so short ranges travel in bundles: a bundle lasts about ``task_seconds``
on a worker (longer when the workers of one pool would otherwise ask for more
than ``MAX_TASKS_PER_SECOND`` tasks, or a whole node type for more than
``DRIVER_TASKS_PER_SECOND``). Bundles never hold the end of a campaign
hostage: a bundle takes at most its share of what is left, so the last ranges
go out in small bundles to whoever is free; but not so small that one pool's
workers would ask for more than ``TAIL_TASKS_PER_SECOND`` tasks (past that, each
worker waits for the task path instead of running ranges). The window is a small multiple of the
connected workers, so the campaign is never submitted at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: Least time a bundle keeps a worker busy (s). (1 s was tried and failed two tests:
#: ranges still running when a short allocation's driver stopped, and the faster of two
#: node types no longer doing more of a short campaign; ``tests/test_walltime.py``,
#: ``tests/test_slurm.py``.)
TASK_SECONDS = 0.25
#: Tasks per second the workers of one pool (a node's manager process) may ask for:
#: beyond it, bundles grow. The manager hands each task to its workers through queues
#: (128 workers on 2 cores: 40 % -> 91.5 % utilisation at 0.1 s ranges with this cap).
MAX_TASKS_PER_SECOND = 50.0
#: Tasks per second a whole node type may ask of the driver and its interchange (each
#: task costs the driver a submission, a ledger row and a result whatever it carries:
#: 100-200 us of its thread at 5,000-100,000 simulated workers, ``benchmarks/scale.py``).
#: Pools scale with nodes; the driver does not: at 393,216 workers x 15 s, bundles of 26.
DRIVER_TASKS_PER_SECOND = 1000.0
#: Tasks per second one pool's workers may ask for at the end of the campaign, where
#: bundles shrink so that workers finish together. Plain Parsl got 460 tasks/s through
#: HTEX on 2 cores shared with 128 workers (``benchmarks/efficiency.py``); single-range
#: bundles at the end of 128 x 0.1 s would ask for 1,280/s: workers queue for tasks
#: (three runs each: 88.4, 87.6, 90.3 % without this floor; 92.6, 92.8, 92.4 % with it).
TAIL_TASKS_PER_SECOND = 200.0
#: Largest bundle, to bound a lost worker's cost and the size of one result (about
#: 150 kB of results at 1,024 ranges). It binds only ranges shorter than 0.25 ms, which
#: at 256 (before 2026-11-30) went out in bundles shorter than ``TASK_SECONDS``.
MAX_BUNDLE = 1024


def bundle_size(
    mean_range_seconds: float | None,
    workers: int,
    remaining: int,
    prefetch: float = 2.0,
    task_seconds: float = TASK_SECONDS,
    max_bundle: int = MAX_BUNDLE,
    pools: int = 1,
) -> int:
    """Ranges in the next bundle for a node type of ``workers`` in ``pools`` pools.

    ``mean_range_seconds`` is None until ranges of the node type have finished:
    then bundles are single ranges, so the first durations arrive quickly.
    """
    if mean_range_seconds is None or remaining <= 0:
        return 1
    mean = max(mean_range_seconds, 1e-6)
    per_pool = workers / max(1, pools)
    seconds = max(task_seconds, per_pool / MAX_TASKS_PER_SECOND, workers / DRIVER_TASKS_PER_SECOND)
    tail = remaining / max(1.0, workers * prefetch)
    floor = max(per_pool / TAIL_TASKS_PER_SECOND, workers / DRIVER_TASKS_PER_SECOND) / mean
    return max(1, min(max_bundle, int(seconds / mean), math.ceil(max(tail, floor))))


def bundle_sizer(
    mean_range_seconds: float | None,
    workers: int,
    pools: int,
    prefetch: float,
    left: Callable[[], int],
    fit: int | None = None,
) -> Callable[[], int]:
    """The size of each next bundle of one top-up, ``left()`` ranges waiting each time.

    Worked out once per top-up: only the tail's share (of what is left) changes from
    one bundle to the next, and only that is followed per bundle. ``fit``: ranges that
    still fit before the allocation ends (None: no end in sight).
    """
    most = bundle_size(mean_range_seconds, workers, 1 << 62, prefetch, pools=pools)
    if fit is not None:
        most = max(1, min(most, fit))
    per_bundle = max(1.0, workers * prefetch)  # remaining / this: the tail's share

    def size_now() -> int:
        remaining = left()
        if remaining > most * per_bundle:  # far from the tail: the share is larger
            return most
        size = bundle_size(mean_range_seconds, workers, remaining, prefetch, pools=pools)
        return size if fit is None else max(1, min(size, fit))

    return size_now


def top_up_limit(answered: int, least: int) -> int:
    """Most ranges one top-up starts: ``least``, or as many as came back since the last
    top-up if more.

    A top-up of a whole machine's window in one go keeps results waiting (hence a
    limit), but a fixed one starves the workers during a wave of results: bundles
    that started together finish together, the driver hands in thousands of tasks
    per loop, and a top-up of ``least`` replaced a tenth of them (100,000 workers x
    1 s: idle workers while results were recorded). Starting as many as came back
    keeps what is queued for the workers level.
    """
    return max(least, answered)


def window_size(workers: int | None, expected: int, durations_known: bool, prefetch: float) -> int:
    """Tasks a node type may hold in flight.

    Until a range of the node type has finished, one single-range task per
    worker (bundles are sized from the first durations). With nobody connected
    yet (a block still queued), only what the expected workers will take first,
    so other node types are not starved of ranges held here.
    """
    if not workers:
        return max(1, expected)
    return max(1, math.ceil(workers * (prefetch if durations_known else 1.0)))


#: Ranges a step must have measured on each of its node types before it compares
#: their speeds: a worker's first ranges carry its imports, and a node type judged
#: slow on two of them would never run the ranges that could prove otherwise.
SPEED_SAMPLES = 8


def fastest_first(
    node_types: list[str], measured: dict[str, tuple[int, float | None]]
) -> tuple[list[str], dict[str, float]]:
    """A step's node types fastest first by median range duration, and the medians.

    ``measured`` is ``(ranges measured, median seconds)`` per node type. Until every
    node type has ``SPEED_SAMPLES`` ranges, the step's own order and no medians.
    """
    if len(node_types) < 2:
        return node_types, {}
    medians: dict[str, float] = {}
    for nt in node_types:
        count, median = measured.get(nt, (0, None))
        if count < SPEED_SAMPLES or median is None:
            return node_types, {}
        medians[nt] = median
    return sorted(node_types, key=medians.__getitem__), medians


def worth_a_slower_node_type(
    slower_seconds: float, faster_seconds: float, backlog: int, faster_workers: int
) -> bool:
    """Whether a range should start on a node type slower for this step than its fastest.

    Only if it would finish there before the fastest node type gets through the
    step's backlog (ranges waiting and in flight there): at the end of a step, a
    GPU build ten times faster finishes the last ranges sooner than CPUs starting
    them now, and the CPUs are free for the steps they suit.
    """
    through_backlog = (backlog / max(1, faster_workers) + 1) * faster_seconds
    return slower_seconds < through_backlog
