"""How many consecutive event ranges travel as one Parsl task.

Every Parsl task costs the driver about half a millisecond of CPU (and the
interchange and worker some more), whatever it carries. Ranges of a few
milliseconds would spend most of the allocation on that, and one driver could
feed only a few hundred ranges per second. So short ranges travel in bundles:
a bundle lasts about ``task_seconds`` on a worker (longer when many workers
would otherwise ask for more than ``MAX_TASKS_PER_SECOND`` tasks), and the
per-task cost is shared by all its ranges. The ledger, retries, merges and progress still work
range by range.

Bundles never hold the end of a campaign hostage: a bundle takes at most its
share of what is left (``remaining / (workers x prefetch)``), so the last
ranges go out one by one to whoever is free. Long ranges travel alone.
"""

from __future__ import annotations

import math

#: Least time a bundle keeps a worker busy (s).
TASK_SECONDS = 0.25
#: Tasks per second a node type's workers may ask of the driver, interchange and
#: worker pools: beyond it, bundles grow (many workers, short ranges).
MAX_TASKS_PER_SECOND = 50.0
#: Largest bundle, to bound a lost worker's cost and the size of one result.
MAX_BUNDLE = 256


def bundle_size(
    mean_range_seconds: float | None,
    workers: int,
    remaining: int,
    prefetch: float = 2.0,
    task_seconds: float = TASK_SECONDS,
    max_bundle: int = MAX_BUNDLE,
) -> int:
    """Ranges in the next bundle for a node type.

    ``mean_range_seconds`` is None until ranges of the node type have finished:
    then bundles are single ranges, so the first durations arrive quickly.
    """
    if mean_range_seconds is None or remaining <= 0:
        return 1
    seconds = max(task_seconds, workers / MAX_TASKS_PER_SECOND)
    size = seconds / max(mean_range_seconds, 1e-6)
    tail = remaining / max(1.0, workers * prefetch)
    return max(1, min(max_bundle, int(size), math.ceil(tail)))
