"""The event-service loop: one thread, four moves, repeated until nothing is in flight.

Check deadlines, top every step up, wait for completions, hand each batch of
completions to its step. Everything the steps decide lives in the steps and
the small policies they use (``sizing``, ``cutoff``, ``timeouts``,
``watchdog``, ``states.after_outcome``); the loop only knows that steps exist.
A run ends when, after a top-up, no step has anything in flight: everything
that could be done is done, or nothing more can start (fatal work, the
allocation's end), or a stop was asked for and the grace period is over.

A chain campaign is several ``Stage``s in one loop: each chain step runs the
same declared steps on its own ledger, plan and directory, a step's validated
merged files release the ranges of the steps that read them, and later chain
steps top up first, so intermediate files are consumed before more are made.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parsl_es import apps, fileio
from parsl_es.backends.base import Backend, WakingEvent
from parsl_es.engine.collector import driver_collector
from parsl_es.engine.context import (
    DEADLINE_SLACK_SECONDS,
    WATCHDOG_SECONDS,
    EngineContext,
    log,
)
from parsl_es.engine.counters import Rate, snapshot
from parsl_es.engine.result import Progress, RunResult
from parsl_es.engine.simulate import SimulateStep
from parsl_es.engine.step import Step
from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement, StepSpec, Unit
from parsl_es.engine.totals import combined, ended_run
from parsl_es.engine.windows import WORKER_POLL_SECONDS
from parsl_es.engine.wiring import Settings, Stage, build_steps, context_for
from parsl_es.ledger import Ledger
from parsl_es.stepplan import StepPlan

#: Longest the loop sleeps when nothing is due: a safety net, not a poll. The loop wakes
#: for a completion, a stop, or the next deadline (a bundle's or a merge's allowance, the
#: stop's grace period, the allocation's end), whichever comes first.
MAX_WAIT_SECONDS = 30.0
#: While ranges wait for workers that have not connected yet, how often they are counted
#: (Parsl says nothing when a worker pool connects).
CONNECTING_POLL_SECONDS = WORKER_POLL_SECONDS
#: Most finished tasks handed to the steps in one pass of the loop: a whole machine's
#: results arriving together are recorded in slices, with top-ups in between.
DRAIN_TASKS = 2_000
#: Least time between two progress reports (they follow completions: none while waiting).
PROGRESS_SECONDS = 0.25


class Dispatcher:
    """Runs one campaign on a backend until it is complete, stuck or stopped."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        backend: Backend,
        output_dir: Path,
        settings: Settings,
        payload: tuple[str, dict[str, Any]] | None = None,
        placement: Placement | None = None,
        stages: Sequence[Stage] | None = None,
        steps: Sequence[StepSpec] = SIMULATION_CAMPAIGN,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """A single-step campaign gives ``payload`` and ``placement``; a chain its ``stages``."""
        if stages is None:
            assert payload is not None and placement is not None
            stages = [Stage(StepPlan(name=None, plan=ledger.plan, payload=payload), placement)]
        self.settings = settings
        self.stop_event = stop if stop is not None else WakingEvent()
        first: EngineContext | None = None
        self.contexts: list[EngineContext] = []
        self.steps: list[Step] = []
        self._stage_of: dict[str, int] = {}  # chain step name -> stage index
        for i, stage in enumerate(stages):
            name = stage.plan.name
            ctx = context_for(
                ledger if name is None else ledger.step(name),
                backend,
                # absolute: workers need not share the driver's working directory (a Globus
                # Compute endpoint runs each task in a directory of its own)
                Path(output_dir).absolute() / stage.plan.directory,
                stage.plan,
                settings,
                self.stop_event,
                first,
            )
            first = first or ctx
            built = build_steps(steps, ctx, stage.placement)
            if stage.plan.input is not None:  # its ranges start as its input's files pass
                before = self.steps_of(stage.plan.input)
                validate = next(s for s in before if s.spec.unit is Unit.MERGED_FILE)
                validate.downstream.append(built[0])
            self._stage_of[name or ""] = i
            self.contexts.append(ctx)
            self.steps.extend(built)
        assert first is not None
        self.ctx = first
        # later chain steps first: what is made is consumed before more is made
        self._top_up_order = sorted(self.steps, key=lambda s: -self.contexts.index(s.ctx))
        self.on_progress = on_progress
        self._rate = Rate()
        self._step_rates = [Rate() for _ in self.contexts]
        self._t0 = 0.0
        self._last_progress = float("-inf")
        if isinstance(self.stop_event, WakingEvent):  # a stop wakes the waiting loop
            self.stop_event.wakes(self.ctx.completions)

    def steps_of(self, chain_step: str) -> list[Step]:
        ctx = self.contexts[self._stage_of[chain_step]]
        return [s for s in self.steps if s.ctx is ctx]

    @property
    def stop(self) -> threading.Event:
        return self.stop_event

    def run(self) -> RunResult:
        with driver_collector(self.settings.collector):  # (full collections are rare)
            return self._run()

    def _run(self) -> RunResult:
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
        states = []
        for ctx in self.contexts:
            reset = ctx.ledger.reset_for_resume(ctx.output_dir)
            if any(reset.values()):
                log.info("resume%s: %s", f" ({ctx.step})" if ctx.step else "", reset)
            state = ctx.ledger.resume_state()
            started = [m.group for m in state.merges if m.first_range < state.cursor]
            for where in apps.writable_dirs(ctx.output_dir, started):
                if removed := fileio.remove_temp_files(where):
                    log.info("removed %d partial files in %s/", removed, where)
            ctx.counters.events_done = state.events_done
            ctx.counters.ranges_done = state.ranges_done
            states.append(state)
        for step in self.steps:
            step.load(states[self.contexts.index(step.ctx)])
        for ctx in self.contexts:  # input files that passed before this run
            source = ctx.plan.input
            if source is None:
                continue
            ranges = self.steps_of(ctx.step or "")[0]
            assert isinstance(ranges, SimulateStep)
            for group in self.contexts[self._stage_of[source.step]].ledger.passed_groups():
                ranges.release(group)

    def _loop(self) -> None:
        ctx = self.ctx
        stop_deadline: float | None = None
        checked = float("-inf")
        self._due = float("-inf")
        while True:
            now = ctx.backend.now()
            if (self.stop.is_set() or ctx.no_space) and stop_deadline is None:
                stop_deadline = now + self.settings.stop_grace_seconds
                log.warning("stop requested: no new ranges; waiting for those in flight")
            # checked at each deadline, and at most once a second while results flow
            if now >= self._due or now - checked >= WATCHDOG_SECONDS:
                checked = now
                self._due = float("inf")
                for step in self.steps:
                    step.check(now)
            if stop_deadline is None:
                for step in self._top_up_order:
                    step.top_up(now)
            if not any(step.busy() for step in self.steps):
                break
            if stop_deadline is not None and now > stop_deadline:
                log.warning("stop grace period over: leaving in-flight ranges for resume")
                break
            if any(c.cutoff.must_leave(now) for c in self.contexts):
                log.warning("allocation about to end: leaving in-flight work for resume")
                break
            self._report()  # after the top-up: what is in flight while the loop waits
            self._drain(now, stop_deadline)

    def _drain(self, now: float, stop_deadline: float | None) -> None:
        """Hand every completion available now to its step, in pipeline order.

        With none there, sleep until one comes, a stop is asked for, or the next
        deadline (no polling: see ``_next_wake``).
        """
        ctx = self.ctx
        if not len(ctx.completions) and not any(s.unfinished_top_up() for s in self.steps):
            wake = self._next_wake(now, stop_deadline)
            ctx.backend.wait(ctx.completions, max(0.0, wake - now))
        items = ctx.completions.take(DRAIN_TASKS)
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

    def _next_wake(self, now: float, stop_deadline: float | None) -> float:
        """When the loop must look again though nothing completed: the next deadline.

        Each step's earliest deadline (when ``check`` has something to decide), the
        stop's grace period, the allocation's end, and while ranges wait for workers
        still connecting, the next count of them. Sets ``_due`` for the checks.
        """
        due = min((_deadline(step, now) for step in self.steps), default=float("inf"))
        self._due = due
        wake = min(due, now + MAX_WAIT_SECONDS)
        if stop_deadline is not None:
            wake = min(wake, stop_deadline)
        for c in self.contexts:
            if c.cutoff.end is not None:
                wake = min(wake, c.cutoff.end - c.cutoff.margin / 2)
        if not self.stop.is_set() and any(step.connecting() for step in self.steps):
            wake = min(wake, now + CONNECTING_POLL_SECONDS)
        if not isinstance(self.stop_event, WakingEvent):  # a plain Event cannot wake us
            wake = min(wake, now + STOP_POLL_SECONDS)
        return wake

    # --- reporting ---------------------------------------------------------------------------
    def progress(self) -> Progress:
        """The campaign's progress; a chain's adds up its steps (each event once per step)."""
        now = self.ctx.backend.now()
        per_step = []
        for ctx, rate in zip(self.contexts, self._step_rates, strict=True):
            units = tasks = 0
            for step in self.steps:
                if step.ctx is ctx:
                    u, t = step.in_flight_counts()
                    units, tasks = units + u, tasks + t
            per_step.append(
                snapshot(
                    ctx.plan,
                    ctx.counters,
                    elapsed=now - self._t0,
                    rate=rate.update(now, ctx.counters.events),
                    ranges_in_flight=units,
                    tasks_in_flight=tasks,
                    stopping=self.stop.is_set(),
                    step=ctx.step,
                )
            )
        events = sum(c.counters.events for c in self.contexts)
        return combined(per_step, self._rate.update(now, events))

    def _report(self, force: bool = False) -> None:
        now = self.ctx.backend.now()
        if self.on_progress and (force or now - self._last_progress > PROGRESS_SECONDS):
            self._last_progress = now
            self.on_progress(self.progress())

    def _result(self) -> RunResult:
        now = self.ctx.backend.now()
        return ended_run(
            self.contexts,
            now=now,
            started=self._t0,
            stopped=self.stop.is_set(),
            held_back=any(s.held_back() for s in self.steps),
            no_space=self.ctx.no_space,
            allocation_end=self.ctx.cutoff.end,
        )


#: How often a stop given as a plain ``threading.Event`` is looked at (a ``WakingEvent``,
#: the default and the CLI's, wakes the loop itself).
STOP_POLL_SECONDS = 1.0


def _deadline(step: Step, now: float) -> float:
    """The earliest moment the step's ``check`` may have something to do.

    Work already past its deadline that ``check`` left running (a slow merge whose
    pool still answers) is looked at again every ``WATCHDOG_SECONDS``.
    """
    due = step.next_deadline(now) + DEADLINE_SLACK_SECONDS
    return due if due > now else now + WATCHDOG_SECONDS
