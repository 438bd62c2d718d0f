"""The validation steps: each merged file as it appears, then the whole campaign.

The campaign proof (every event exactly once across merged files) is chained to
the futures of the per-file validations, and starts once every merged file has
passed and nothing upstream is in flight. The physics plots run beside it (two
workers; at the end of a campaign everything else is idle); the proof stands
without them.
"""

from __future__ import annotations

import shutil
from concurrent.futures import Future
from typing import Any

from parsl_es.apps import group_dir
from parsl_es.backends.base import Call
from parsl_es.engine.context import EngineContext, LostWork, error_text, log
from parsl_es.engine.step import Step
from parsl_es.engine.steps import MergeRecorded, MergeValidated, StepSpec
from parsl_es.ledger import ResumeState
from parsl_es.records import CampaignVerdict, MergedFile, MergeRecord, MergeVerdict, Plots
from parsl_es.states import MergeState


class ValidateStep(Step):
    """Validate each merged file as soon as it is recorded."""

    def __init__(self, spec: StepSpec, ctx: EngineContext, node_types: list[str]) -> None:
        super().__init__(spec, ctx, node_types)
        self.node_type = node_types[0]
        self._running: dict[int, tuple[MergedFile, float]] = {}
        self._lost = LostWork(ctx.budget, ctx.backend, ctx.stop)
        self._pending: list[MergedFile] = []

    def load(self, state: ResumeState) -> None:
        self.ctx.counters.merges_validated += state.merges_validated
        for m in state.merges:  # (the groups still open: the others are counted)
            if m.state is not MergeState.DONE:
                continue
            if m.validation is None:  # merged, but its validation never reported
                self._pending.append(_as_merged(m))

    def accept(self, event: Any) -> None:
        if isinstance(event, MergeRecorded):
            self._pending.append(event.merged)

    def top_up(self, now: float) -> None:
        pending, self._pending = self._pending, []
        for merged in pending:
            self._submit(merged, now)

    def _submit(self, merged: MergedFile, now: float) -> None:
        ctx = self.ctx
        group = ctx.plan.group(merged.group)
        numbered_by = ctx.plan if ctx.plan.dataset else None  # a dataset's own numbers
        args = (*ctx.payload, group, str(ctx.output_dir), merged, numbered_by)
        call = Call(function=self.spec.function, args=args, priority=self.spec.priority)
        ctx.submit(self.name, merged.group, self.node_type, call)
        self._running[merged.group] = (merged, now)

    def busy(self) -> bool:
        return bool(self._running)

    def handle(self, done: list[tuple[Any, Future]], now: float) -> None:
        ctx = self.ctx
        for g, future in done:
            merged, _ = self._running.pop(g)
            exc = future.exception()
            if exc is not None:
                if self._lost.again(exc, g):
                    log.warning("validation of merge %d lost with its worker; again", g)
                    self._pending.append(merged)
                    continue
                log.error("validation of merge %d raised: %s", g, exc)
                verdict = MergeVerdict(group=g, passed=False, problems=(error_text(exc),))
                ctx.ledger.record_verdict(verdict)
                ctx.counters.failed_merges.add(g)
                continue
            verdict = future.result()
            ctx.pools.result_from(verdict.where.pool, now)
            ctx.ledger.record_verdict(verdict)
            if verdict.passed:
                ctx.counters.merges_validated += 1
                self.emit(MergeValidated(g, future))
                if not ctx.keep_range_files:
                    self._remove_range_files(g)
            else:
                log.error("merge %d failed validation: %s", g, list(verdict.problems))
                ctx.counters.failed_merges.add(g)

    def check(self, now: float) -> None:
        self.ctx.check_slow_work(self.node_type, [t for _, t in self._running.values()], now)

    def next_deadline(self, now: float) -> float:
        return self.ctx.slow_work_deadline([t for _, t in self._running.values()])

    def _remove_range_files(self, g: int) -> None:
        """A validated group's range files, no longer needed (``keep_range_files: false``).

        Raythena does this to stay inside disk quotas. Should the merged file be lost
        later, resume finds its ranges' files gone too and simulates them again.
        """
        shutil.rmtree(group_dir(self.ctx.output_dir, g), ignore_errors=True)


class CampaignStep(Step):
    """Once every merged file passed: the campaign proof (or, not required, its plots)."""

    def __init__(self, spec: StepSpec, ctx: EngineContext, node_types: list[str]) -> None:
        super().__init__(spec, ctx, node_types)
        self.node_type = node_types[0]
        self.needed = True
        self._done = False
        self._running: Future | None = None
        self._validated: list[Future] = []
        self._lost = LostWork(ctx.budget, ctx.backend, ctx.stop)

    def load(self, state: ResumeState) -> None:
        self.needed = not state.campaign_validated

    def accept(self, event: Any) -> None:
        if isinstance(event, MergeValidated):
            self._validated.append(event.future)

    def busy(self) -> bool:
        return self._running is not None

    def top_up(self, now: float) -> None:
        ctx = self.ctx
        if self._running is not None or self._done or not self.needed:
            return
        if ctx.counters.merges_validated < ctx.plan.n_merges:
            return
        if any(step.busy() for step in self.upstream):
            return
        merges = ctx.ledger.merge_records()
        args = (*ctx.payload, ctx.plan, str(ctx.output_dir), merges)
        call = Call(
            function=self.spec.function,
            args=args,
            inputs=tuple(self._validated),
            priority=self.spec.priority,
        )
        self._running = ctx.submit(self.name, None, self.node_type, call)

    def handle(self, done: list[tuple[Any, Future]], now: float) -> None:
        for _, future in done:
            self._running = None
            self._validated = []
            exc = future.exception()
            if exc is not None and self._lost.again(exc, self.name):
                log.warning("%s lost with its worker; it runs again", self.name)
                continue
            self._done = True
            if not self.spec.required:
                if exc is not None:
                    log.warning("%s failed (the proof stands without it): %s", self.name, exc)
                else:
                    self._record(future.result())
                continue
            if exc is not None:
                self._record(CampaignVerdict(passed=False, problems=(error_text(exc),)))
            else:
                self._record(future.result())

    def _record(self, result: CampaignVerdict | Plots) -> None:
        if isinstance(result, Plots):
            self.ctx.ledger.record_plots_run(result)
            return
        self.ctx.campaign_verdict = result
        self.ctx.ledger.record_campaign_verdict(result)


def _as_merged(m: MergeRecord) -> MergedFile:
    """A merged file as the ledger recorded it (its validation is still to run)."""
    return MergedFile(
        group=m.group,
        attempt=m.attempts,
        output=m.output or "",
        size=m.size or 0,
        checksum=m.checksum or "",
        n_events=m.n_events or 0,
        started=m.started or 0.0,
        finished=m.finished or 0.0,
    )
