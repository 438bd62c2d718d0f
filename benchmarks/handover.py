"""Where a worker's time between two tasks goes inside Parsl's worker pool, from its logs.

HTEX's worker (``process_worker_pool.worker``) logs three lines per task, at INFO:
``Received executor task N`` once the task is taken from the pool's shared queue
and recorded in the pool's ``tasks_in_progress`` dict (a round trip to a
multiprocessing-manager process, the task's buffer included); ``Completed
executor task N`` once the function has returned and its result is serialised;
``All processing finished for executor task N`` once the result is queued and
the task popped from that dict (a second round trip). So between two tasks a worker spends:

- ``returning``: Completed -> All processing finished (the result queued, the dict popped);
- ``taking``: All processing finished -> the next Received (the shared queue, the ready
  counter's locks, the dict set; and, when no task is waiting in the pool, the wait for one).

Only hand-overs that begin inside ``[t0, t1]`` count: a benchmark runs several
campaigns one after the other on the same workers.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.common import quantiles_ms

_TAKEN = "Received executor task"
_RETURNED = "Completed executor task"
_FREE = "All processing finished"


def handovers(log_root: Path, t0: float, t1: float) -> dict:
    """Returning and taking times (ms) of every hand-over in ``[t0, t1]``, and their total (s)."""
    returning: list[float] = []
    taking: list[float] = []
    for log in Path(log_root).rglob("worker_*.log"):
        completed = free = None
        with open(log, errors="replace") as lines:
            for line in lines:
                stamp, _, text = line.partition(" ")
                try:
                    t = float(stamp)
                except ValueError:
                    continue
                if _RETURNED in text:
                    completed = t
                elif _FREE in text:
                    if completed is not None and t0 <= completed <= t1:
                        returning.append(t - completed)
                    free, completed = t, None
                elif _TAKEN in text and free is not None:
                    if t0 <= free <= t1:
                        taking.append(t - free)
                    free = None
    return {
        "returning_ms": quantiles_ms(returning),
        "taking_ms": quantiles_ms(taking),
        "worker_seconds": round(sum(returning) + sum(taking), 2),
    }
