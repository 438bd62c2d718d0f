"""The merge step: merge each complete group on the fly, exactly one attempt recorded.

A group is merged the moment its last range is recorded done, while other
ranges are still being simulated. A merge writes under its attempt's own name
(beside the group's range files); only the driver renames it into ``merged/``,
and only while that attempt is the group's current one: a late merge of an
attempt given up on can never replace a file the ledger recorded.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from concurrent.futures import Future
from typing import Any

from parsl_es import fileio
from parsl_es.apps import DamagedRangeFiles, merged_output_path, pack
from parsl_es.backends.base import Call
from parsl_es.crashpoints import crash_point
from parsl_es.engine.context import EngineContext, LostWork, error_text, log
from parsl_es.engine.step import Step
from parsl_es.engine.steps import MergeRecorded, RangesDone, StepSpec
from parsl_es.interrupts import shielded
from parsl_es.ledger import ResumeState
from parsl_es.records import MergedFile
from parsl_es.states import MergeState


class MergeStep(Step):
    def __init__(self, spec: StepSpec, ctx: EngineContext, node_types: list[str]) -> None:
        super().__init__(spec, ctx, node_types)
        self.node_type = node_types[0]
        self._left: dict[int, int] = {}  # ranges not yet done, per unmerged group
        self._ready: set[int] = set()  # complete groups to submit
        self._running: dict[int, tuple[int, float]] = {}  # group -> (attempt, submitted)
        self._failures: dict[int, int] = {}  # payload failures per group
        self._lost = LostWork(ctx.budget, ctx.backend, ctx.stop)
        self.deferred: set[int] = set()  # left for the next allocation

    def load(self, state: ResumeState) -> None:
        self.ctx.counters.merges_done += state.merges_done
        for m in state.merges:  # (the groups still open: the others are counted)
            if m.state is MergeState.DONE:
                continue
            n_ranges = m.last_range - m.first_range + 1
            self._left[m.group] = n_ranges - state.done_per_group.get(m.group, 0)
            if self._left[m.group] == 0:
                self._ready.add(m.group)

    def busy(self) -> bool:
        return bool(self._running)

    def held_back(self) -> bool:
        return bool(self.deferred)

    def accept(self, event: Any) -> None:
        if isinstance(event, RangesDone):
            left = self._left
            for g in self.ctx.plan.groups_of(event.indices):
                left[g] -= 1
                if not left[g]:
                    self._ready.add(g)

    def top_up(self, now: float) -> None:
        for g in sorted(self._ready):
            self._submit(g, now)
        self._ready.clear()

    def _submit(self, g: int, now: float) -> None:
        ctx = self.ctx
        if not ctx.cutoff.may_start_merge(now):
            self.deferred.add(g)
            log.info("merge %d left for the next allocation: it would not finish in time", g)
            return
        group = ctx.plan.group(g)
        with shielded():  # running in the ledger and in flight, or neither (Ctrl-C)
            attempt = ctx.ledger.start_merge(g, self.node_type, now)
            # The group's range files, as recorded: every one is done (and durable) by now.
            known = pack(ctx.ledger.group_range_outputs(group))
            args = (*ctx.payload, group, str(ctx.output_dir), known, attempt)
            call = Call(function=self.spec.function, args=args, priority=self.spec.priority)
            ctx.submit(self.name, (g, attempt), self.node_type, call)
            self._running[g] = (attempt, now)
        crash_point("merge-submitted")

    def handle(self, done: list[tuple[Any, Future]], now: float) -> None:
        for key, future in done:
            self._handle_one(*key, future, now)

    def _handle_one(self, g: int, attempt: int, future: Future, now: float) -> None:
        ctx = self.ctx
        current = self._running.get(g)
        if current is None or current[0] != attempt:  # an attempt already given up on
            if future.exception() is None:
                (ctx.output_dir / future.result().output).unlink(missing_ok=True)
            return
        del self._running[g]
        exc = future.exception()
        if exc is None:
            merged: MergedFile = future.result()
            ctx.pools.result_from(merged.where.pool, now)
            ctx.estimates.merges.add(merged.finished - merged.started)
            merged = self._publish(merged)
            if not ctx.ledger.finish_merge(merged):
                raise RuntimeError(f"merge {g} attempt {attempt} is not current in the ledger")
            crash_point("merge-recorded")
            ctx.counters.merges_done += 1
            ctx.counters.merges += 1
            self.emit(MergeRecorded(merged))
            return
        err = error_text(exc)
        ctx.ledger.fail_merge(g, attempt, err, now)
        if isinstance(exc, DamagedRangeFiles):
            self._redo_damaged(g, exc.problems, now)
        elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            ctx.disk_full(f"merge {g}: {exc}")
        elif self._lost.again(exc, g):
            log.warning("merge %d lost with its worker; submitting it again", g)
            self._ready.add(g)
        elif self._failures.get(g, 0) + 1 < ctx.budget.attempts and not ctx.stop.is_set():
            self._failures[g] = self._failures.get(g, 0) + 1
            log.warning("merge %d failed (%s); retrying", g, err)
            self._ready.add(g)
        else:
            log.error("merge %d failed for good: %s", g, err)
            ctx.counters.failed_merges.add(g)

    def _publish(self, merged: MergedFile) -> MergedFile:
        """Rename the current attempt's file to the group's merged file (atomic, durable)."""
        out = self.ctx.output_dir
        written = out / merged.output
        final = merged_output_path(out, self.ctx.plan.group(merged.group), written.suffix)
        os.replace(written, final)
        fileio.fsync_dir(final.parent)
        return dataclasses.replace(merged, output=str(final.relative_to(out)))

    def _redo_damaged(self, g: int, problems: dict[int, str], now: float) -> None:
        """Simulate a group's damaged range files again; the group merges once they are done."""
        ctx = self.ctx
        reset = ctx.ledger.redo_damaged(problems, now)
        log.warning("merge %d: %d range files damaged or missing; redoing them", g, len(reset))
        ctx.counters.ranges_undone(len(reset), sum(ctx.plan.range(i).n_events for i in reset))
        self._left[g] = self._left.get(g, 0) + len(reset)
        self._failures.pop(g, None)
        for step in self.upstream:
            step.redo(reset)

    def check(self, now: float) -> None:
        self.ctx.check_slow_work(self.node_type, [t for _, t in self._running.values()], now)

    def next_deadline(self, now: float) -> float:
        return self.ctx.slow_work_deadline([t for _, t in self._running.values()])
