"""The event-service loop: one thread, four moves, repeated until nothing is in flight.

Check deadlines, top every step up, wait for completions, hand each batch of
completions to its step. Everything the steps decide lives in the steps and
the small policies they use (``sizing``, ``cutoff``, ``timeouts``,
``watchdog``, ``states.after_outcome``); the loop only knows that steps exist.
A run ends when, after a top-up, no step has anything in flight: everything
that could be done is done, or nothing more can start (fatal work, the
allocation's end), or a stop was asked for and the grace period is over.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.backends.base import Backend
from parsl_es.engine.context import WATCHDOG_SECONDS, EngineContext, log
from parsl_es.engine.counters import Rate, snapshot
from parsl_es.engine.cutoff import Cutoff
from parsl_es.engine.ending import RunEnd, decide
from parsl_es.engine.estimates import Estimates
from parsl_es.engine.merge import MergeStep
from parsl_es.engine.result import Progress, RunResult
from parsl_es.engine.simulate import SimulateStep
from parsl_es.engine.step import Step
from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement, StepSpec, Unit
from parsl_es.engine.timeouts import RangeTimeouts, TimeoutPolicy
from parsl_es.engine.validate import CampaignStep, ValidateStep
from parsl_es.ledger import Ledger
from parsl_es.states import RetryBudget

DEFAULT_TIMEOUTS = TimeoutPolicy()

#: The controller that runs each unit of work.
CONTROLLERS: dict[Unit, type[Step]] = {
    Unit.RANGES: SimulateStep,
    Unit.MERGE_GROUP: MergeStep,
    Unit.MERGED_FILE: ValidateStep,
    Unit.CAMPAIGN: CampaignStep,
}
#: Longest wait for a completion before the loop looks at deadlines and stops again.
WAIT_SECONDS = 0.2
#: Least time between two progress reports.
PROGRESS_SECONDS = 0.25


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How the engine drives one run (the same for a new campaign and a resumed one)."""

    attempts: int
    timeouts: TimeoutPolicy = DEFAULT_TIMEOUTS
    bundle_size: int | None = None
    allocation_end: float | None = None
    margin_seconds: float = 0.0
    stop_grace_seconds: float = 30.0


class Dispatcher:
    """Runs one campaign on a backend until it is complete, stuck or stopped."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        backend: Backend,
        output_dir: Path,
        payload: tuple[str, dict[str, Any]],
        placement: Placement,
        settings: Settings,
        steps: Sequence[StepSpec] = SIMULATION_CAMPAIGN,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        estimates = Estimates()
        self.ctx = EngineContext(
            ledger=ledger,
            backend=backend,
            # absolute: workers need not share the driver's working directory (a Globus
            # Compute endpoint runs each task in a directory of its own)
            output_dir=Path(output_dir).absolute(),
            plan=ledger.plan,
            payload=payload,
            budget=RetryBudget(settings.attempts),
            estimates=estimates,
            cutoff=Cutoff(settings.allocation_end, settings.margin_seconds, estimates),
            timeouts=RangeTimeouts(settings.timeouts, estimates),
            stop=stop or threading.Event(),
            bundle_size=None if settings.bundle_size is None else max(1, settings.bundle_size),
        )
        self.settings = settings
        self.steps = build_steps(steps, self.ctx, placement)
        self.on_progress = on_progress
        self._rate = Rate()
        self._t0 = 0.0
        self._last_progress = float("-inf")

    @property
    def stop(self) -> threading.Event:
        return self.ctx.stop

    def run(self) -> RunResult:
        self._t0 = self.ctx.backend.now()
        self._load()
        while True:
            try:
                self._loop()
                break
            except sqlite3.OperationalError as exc:  # the ledger could not commit
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_FULL:
                    raise
                self.ctx.no_space = f"ledger: {exc}"
                log.error("disk full: %s; stopping (in-flight ranges are redone on resume)", exc)
                self.ctx.let_in_flight_finish(self.settings.stop_grace_seconds)
                break
            except KeyboardInterrupt:
                # Ctrl-C in a notebook (the CLI turns SIGINT into ``stop`` itself): the
                # first one stops gracefully, a second one aborts; the ledger is
                # consistent either way (transactions roll back).
                if self.stop.is_set():
                    raise
                self.stop.set()
                log.warning("interrupted: starting nothing new; interrupt again to abort")
        self._report(force=True)
        return self._result()

    def _load(self) -> None:
        """Rebuild every step's view from the ledger (fresh start or resume)."""
        ctx = self.ctx
        reset = ctx.ledger.reset_for_resume(ctx.output_dir)
        if any(reset.values()):
            log.info("resume: %s", reset)
        for sub in ("ranges", "merged", "validation"):
            removed = fileio.remove_temp_files(ctx.output_dir / sub)
            if removed:
                log.info("removed %d partial files in %s/", removed, sub)
        state = ctx.ledger.resume_state()
        ctx.counters.events_done = state.events_done
        ctx.counters.ranges_done = state.ranges_done
        for step in self.steps:
            step.load(state)

    def _loop(self) -> None:
        ctx = self.ctx
        stop_deadline: float | None = None
        checked = float("-inf")
        while True:
            now = ctx.backend.now()
            if (self.stop.is_set() or ctx.no_space) and stop_deadline is None:
                stop_deadline = now + self.settings.stop_grace_seconds
                log.warning("stop requested: no new ranges; waiting for those in flight")
            if now - checked >= WATCHDOG_SECONDS:
                checked = now
                for step in self.steps:
                    step.check(now)
            if stop_deadline is None:
                for step in self.steps:
                    step.top_up(now)
            if not any(step.busy() for step in self.steps):
                break
            if stop_deadline is not None and now > stop_deadline:
                log.warning("stop grace period over: leaving in-flight ranges for resume")
                break
            if ctx.cutoff.must_leave(now):
                log.warning("allocation about to end: leaving in-flight work for resume")
                break
            self._drain()
            self._report()

    def _drain(self) -> None:
        """Hand every completion available now to its step, in pipeline order."""
        ctx = self.ctx
        ctx.backend.wait(ctx.completions, WAIT_SECONDS)
        items = ctx.completions.take_all()
        if not items:
            return
        by_step: dict[str, list] = {}
        for step_name, key, future in items:
            by_step.setdefault(step_name, []).append((key, future))
        now = ctx.backend.now()
        for step in self.steps:
            done = by_step.get(step.name)
            if done:
                step.handle(done, now)

    # --- reporting ---------------------------------------------------------------------------
    def progress(self) -> Progress:
        now = self.ctx.backend.now()
        units = tasks = 0
        for step in self.steps:
            u, t = step.in_flight_counts()
            units, tasks = units + u, tasks + t
        return snapshot(
            self.ctx.plan,
            self.ctx.counters,
            elapsed=now - self._t0,
            rate=self._rate.update(now, self.ctx.counters.events),
            ranges_in_flight=units,
            tasks_in_flight=tasks,
            stopping=self.stop.is_set(),
        )

    def _report(self, force: bool = False) -> None:
        now = self.ctx.backend.now()
        if self.on_progress and (force or now - self._last_progress > PROGRESS_SECONDS):
            self._last_progress = now
            self.on_progress(self.progress())

    def _result(self) -> RunResult:
        ctx, c = self.ctx, self.ctx.counters
        now = ctx.backend.now()
        verdict = ctx.campaign_verdict
        fatal_ids = [ctx.plan.range(i).id for i in sorted(c.fatal_ranges)]
        status, message = decide(
            RunEnd(
                campaign_passed=ctx.ledger.campaign_passed(),
                no_space=ctx.no_space,
                stopped=self.stop.is_set(),
                out_of_time=any(s.held_back() for s in self.steps) or ctx.cutoff.must_leave(now),
                allocation_end=ctx.cutoff.end,
                events_left=ctx.plan.events - c.events_done,
                fatal_ranges=fatal_ids,
                failed_merges=len(c.failed_merges),
                validation_problems=list(verdict.problems) if verdict else [],
            )
        )
        validation = None
        if verdict is not None:
            validation = {**verdict.report, "passed": verdict.passed}
            validation["problems"] = list(verdict.problems)
        return RunResult(
            status=status,
            wall_seconds=now - self._t0,
            events_this_run=c.events,
            ranges_this_run=c.ranges,
            merges_this_run=c.merges,
            failures=c.failures,
            fatal_ranges=fatal_ids,
            failed_merges=sorted(c.failed_merges),
            payload_inits=c.payload_inits,
            workers=len(c.workers),
            validation=validation,
            message=message,
            per_node_type=dict(c.per_node_type),
            last_range_started=c.last_range_started,
            ended=now,
            allocation_end=ctx.cutoff.end,
            timeouts=c.timeouts,
            wedged_pools=c.wedged_pools,
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
