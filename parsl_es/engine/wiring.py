"""How one run's steps are put together: a context per chain step, a controller per step.

A single campaign is one ``Stage``; a chain is one per chain step, each on its
own ledger, plan and directory, sharing the first one's pools, completions and
run state. ``build_steps`` wires each step's controller to the steps after it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from parsl_es.backends.base import Backend
from parsl_es.engine.collector import DRIVER_THRESHOLDS, CollectorThresholds
from parsl_es.engine.context import EngineContext
from parsl_es.engine.cutoff import Cutoff
from parsl_es.engine.estimates import Estimates
from parsl_es.engine.merge import MergeStep
from parsl_es.engine.simulate import SimulateStep
from parsl_es.engine.step import Step
from parsl_es.engine.steps import Placement, StepSpec, Unit
from parsl_es.engine.timeouts import RangeTimeouts, TimeoutPolicy
from parsl_es.engine.validate import CampaignStep, ValidateStep
from parsl_es.ledger import Ledger
from parsl_es.states import RetryBudget
from parsl_es.stepplan import StepPlan

DEFAULT_TIMEOUTS = TimeoutPolicy()

#: The controller that runs each unit of work.
CONTROLLERS: dict[Unit, type[Step]] = {
    Unit.RANGES: SimulateStep,
    Unit.MERGE_GROUP: MergeStep,
    Unit.MERGED_FILE: ValidateStep,
    Unit.CAMPAIGN: CampaignStep,
}


@dataclass(frozen=True)
class Stage:
    """One step of the campaign (a chain step, or the one step of a single campaign)."""

    plan: StepPlan
    placement: Placement


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the engine drives one run (the same for a new campaign and a resumed one)."""

    attempts: int
    timeouts: TimeoutPolicy = DEFAULT_TIMEOUTS
    bundle_size: int | None = None
    allocation_end: float | None = None
    margin_seconds: float = 0.0
    stop_grace_seconds: float = 30.0
    #: Python's garbage collector while the driver runs (None: the process's as it is).
    collector: CollectorThresholds | None = DRIVER_THRESHOLDS


def context_for(
    ledger: Ledger,
    backend: Backend,
    output_dir: Path,
    step: StepPlan,
    settings: Settings,
    stop: threading.Event,
    first: EngineContext | None,
) -> EngineContext:
    """One step's context; every step after the first shares the first one's run state."""
    estimates = Estimates()  # per step: a generator's ranges are not a simulation's
    shared = {}
    if first is not None:
        shared = {
            "pools": first.pools,
            "completions": first.completions,
            "shared": first.shared,
            "outstanding": first.outstanding,
        }
    return EngineContext(
        ledger=ledger,
        backend=backend,
        output_dir=output_dir,
        plan=ledger.plan,
        payload=step.payload,
        budget=RetryBudget(settings.attempts),
        estimates=estimates,
        cutoff=Cutoff(settings.allocation_end, settings.margin_seconds, estimates),
        timeouts=RangeTimeouts(settings.timeouts, estimates),
        stop=stop,
        bundle_size=None if settings.bundle_size is None else max(1, settings.bundle_size),
        step=step.name,
        keep_range_files=step.keep_range_files,
        **shared,
    )


def build_steps(specs: Sequence[StepSpec], ctx: EngineContext, placement: Placement) -> list[Step]:
    """One controller per declared step, each wired to the steps after it."""
    built: dict[str, Step] = {}
    for spec in specs:
        step = CONTROLLERS[spec.unit](spec, ctx, placement.node_types(spec.placement))
        if spec.after is not None:
            before = built[spec.after]
            before.downstream.append(step)
            step.upstream = [*before.upstream, before]
        built[spec.name] = step
    return list(built.values())
