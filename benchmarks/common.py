"""What the benchmarks share: a scratch directory on tmpfs, a driver-CPU clock, output lines."""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A scratch directory, in memory where possible: the benchmarks measure the engine,
    not the disk (on a real file system each range file costs an fsync)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Clock:
    """Wall time and this process's CPU time (all its threads: the driver's cost)."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c


def quantiles_ms(seconds: list[float]) -> dict:
    """Count, median, mean and 90th percentile of durations, in ms (None when empty)."""
    ordered = sorted(seconds)
    n = len(ordered)

    def ms(x: float | None) -> float | None:
        return None if x is None else round(1e3 * x, 2)

    return {
        "count": n,
        "median": ms(ordered[n // 2] if n else None),
        "mean": ms(sum(ordered) / n if n else None),
        "p90": ms(ordered[min(n - 1, int(0.9 * n))] if n else None),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def report(figures: dict, line: str) -> None:
    """One JSON line for scripts, one line for people."""
    print(json.dumps(figures), flush=True)
    print(line, flush=True)


class GcTime:
    """Wall seconds this process has spent in the cyclic garbage collector since
    ``start``, by generation (every thread's collections: whichever thread allocates
    pays for them)."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.collections = [0, 0, 0]
        self._began = 0.0

    def start(self) -> GcTime:
        gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    @property
    def total(self) -> float:
        return sum(self.seconds)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        self.seconds[generation] += time.perf_counter() - self._began
        self.collections[generation] += 1


def one_event_campaign(
    out: Path, name: str, ranges: int, events_per_merge: int, seed: int = 1, **payload: float
) -> None:
    """A fresh output directory and ledger: ``ranges`` one-event ranges of the emulate
    payload (npy output; ``payload`` adds its parameters, e.g. ``seconds_per_event``)."""
    from parsl_es.campaign import campaign_from_dict
    from parsl_es.ledger import LEDGER_NAME, Ledger

    spec = campaign_from_dict(
        {
            "name": name,
            "events": ranges,
            "events_per_range": 1,
            "events_per_merge": events_per_merge,
            "seed": seed,
            "payload": {"name": "emulate", "output_format": "npy", **payload},
        }
    )
    for sub in ("ranges", "merged", "validation", "logs"):
        (out / sub).mkdir(parents=True)
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan).close()


def merges_in_turn() -> tuple:
    """The campaign's steps with merges and validations queued behind the ranges, as
    before 2026-12-01: the baseline for merges first."""
    import dataclasses

    from parsl_es.backends.base import Priority
    from parsl_es.engine.steps import SIMULATION_CAMPAIGN

    return tuple(dataclasses.replace(s, priority=Priority.IN_TURN) for s in SIMULATION_CAMPAIGN)
