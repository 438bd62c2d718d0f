"""What the simulated machine is made of: its node types, its faults, its range durations.

Frozen values, so that a machine can be described once and sent to a process of
its own (``sim_process``) as it is.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

#: Where the virtual clock starts (a fixed epoch time, so runs repeat exactly).
EPOCH = 1_800_000_000.0


@dataclass(frozen=True, kw_only=True)
class SimNodeType:
    """One node type of the simulated machine."""

    workers: int = 4  # in all
    pools: int = 1  # worker pools (nodes, blocks) the workers are spread over
    range_seconds: float = 1.0  # mean duration of one event range
    spread: float = 0.0  # relative spread of range durations (log-normal)
    startup_seconds: float = 0.0  # until a pool connects (a block starting)
    step_seconds: float = 0.05  # duration of merges and validations on it
    prefetch: float = 2.0  # tasks the engine keeps in flight per worker
    #: chain step -> how many times faster its ranges run here than ``range_seconds``
    #: says (below 1: slower): a GPU node type's build of one step, or steps of
    #: different costs on one machine
    step_speedup: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if any(not s > 0 for s in self.step_speedup.values()):
            raise ValueError(f"step_speedup must be positive: {self.step_speedup}")


@dataclass(frozen=True, kw_only=True)
class PoolEvent:
    """Something that happens to one worker pool at a time after the start."""

    at: float
    node_type: str
    pool: int = 0


@dataclass(frozen=True, kw_only=True)
class SimFaults:
    range_failure_rate: float = 0.0  # payload failures per range attempt
    permanent_ranges: frozenset[int] = frozenset()  # ranges that fail permanently
    hung_ranges: frozenset[int] = frozenset()  # first attempt never returns
    late_ranges: frozenset[int] = frozenset()  # first attempt returns, ``late_seconds`` late
    late_seconds: float = 60.0
    task_loss_rate: float = 0.0  # tasks whose worker dies under them
    pool_losses: tuple[PoolEvent, ...] = ()  # a pool dies; a new one starts after start-up
    pool_wedges: tuple[PoolEvent, ...] = ()  # a pool stops returning results, still connected
    lost_merges: int = 0  # the first N merge tasks are lost with their worker


#: A machine without faults (the default).
NO_FAULTS = SimFaults()


def range_durations(
    spec: SimNodeType,
    work: list[tuple[int, int]],
    faults: SimFaults,
    rng: random.Random,
    step: str | None,
) -> list[float]:
    """How long each range of a task takes: the node type's mean with its spread, faster
    for a step it speeds up, and a first attempt of a ``late_ranges`` range late."""
    speedup = spec.step_speedup.get(step or "", 1.0)
    out = []
    for i, a in work:
        seconds = spec.range_seconds
        if spec.spread:
            seconds *= rng.lognormvariate(0.0, spec.spread)
        late = faults.late_seconds if a == 1 and i in faults.late_ranges else 0.0
        out.append(seconds / speedup + late)
    return out
