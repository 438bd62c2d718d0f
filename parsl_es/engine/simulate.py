"""The simulate step: pull event ranges into each node type's window, record results.

The hot path of a campaign. Each top-up fills every node type's window of
tasks with bundles of ranges, registers all their starts in one ledger
transaction and submits one task per bundle; each batch of finished tasks is
recorded in one ledger transaction. Ranges that failed go back to the front of
the feed; the budget for retries is the ledger's (``states.after_outcome``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from parsl_es.apps import pack, unpack
from parsl_es.backends.base import Call
from parsl_es.crashpoints import crash_point
from parsl_es.engine.context import WATCHDOG_SECONDS, EngineContext, error_text, log
from parsl_es.engine.estimates import Estimates
from parsl_es.engine.feed import GatedFeed, RangeFeed
from parsl_es.engine.inflight import Bundle, InFlight
from parsl_es.engine.sizing import fastest_first, top_up_limit, worth_a_slower_node_type
from parsl_es.engine.step import Step
from parsl_es.engine.steps import MergeValidated, RangesDone, StepSpec
from parsl_es.engine.windows import NodeTypeWindows
from parsl_es.interrupts import shielded
from parsl_es.ledger import ResumeState
from parsl_es.records import NOWHERE, BundleResult, RangeResult, TaskOutcomes
from parsl_es.states import FailureKind, Outcome, RangeState

#: Most ranges one top-up starts, unless more came back since the last one
#: (``sizing.top_up_limit``): a whole machine's window (100,000 workers) started in
#: one go kept results waiting for tens of seconds; the loop comes back for the rest
#: at once, after handing out what completed meanwhile.
TOP_UP_RANGES = 20_000


class SimulateStep(Step):
    def __init__(self, spec: StepSpec, ctx: EngineContext, node_types: list[str]) -> None:
        super().__init__(spec, ctx, node_types)
        self.feed = self._feed()
        self.in_flight = InFlight(node_types)
        ctx.shared.range_windows.append(self.in_flight)
        ctx.shared.ranks[id(self)] = {nt: rank for rank, nt in enumerate(node_types)}
        self.cut = False  # no range can finish before the allocation ends any more
        self.unfilled = False  # the last top-up stopped at its limit
        self.answered = 0  # ranges of the tasks handed in since the last top-up
        self.capacity = NodeTypeWindows(ctx, node_types)
        # node types whose bundles timed out: (quiet-for allowance, watch until)
        self._suspects: dict[str, tuple[float, float]] = {}

    def _feed(self, state: ResumeState | None = None) -> RangeFeed:
        n = self.ctx.plan.n_ranges
        if self.ctx.plan.input is not None:  # ranges come as their input files pass
            return GatedFeed(n, state.retry if state else ())
        return RangeFeed(n, state.cursor, state.retry) if state else RangeFeed(n)

    def load(self, state: ResumeState) -> None:
        self.feed = self._feed(state)

    def accept(self, event: Any) -> None:
        """An input file passed its validation: its ranges may start (a chain step)."""
        if isinstance(event, MergeValidated) and isinstance(self.feed, GatedFeed):
            self.release(event.group)

    def release(self, input_group: int) -> None:
        """The ranges that read the input step's merged file ``input_group``, if untouched.

        Touched ones are in the ledger already: done, or in the retry list.
        """
        block = self.ctx.plan.input_ranges(input_group)
        touched = self.ctx.ledger.touched(block.start, block.stop - 1)
        assert isinstance(self.feed, GatedFeed)
        self.feed.release(i for i in block if i not in touched)

    def busy(self) -> bool:
        return bool(self.in_flight)

    def unfinished_top_up(self) -> bool:
        return self.unfilled

    def held_back(self) -> bool:
        return self.cut

    def in_flight_counts(self) -> tuple[int, int]:
        return self.in_flight.ranges(), self.in_flight.all_tasks()

    def redo(self, indices: list[int]) -> None:
        """Ranges to simulate again before any other (their merge group waits)."""
        self.feed.redo(indices)

    # --- starting ranges ---------------------------------------------------------------
    def top_up(self, now: float) -> None:
        """Fill every node type's window; all new starts go to the ledger at once."""
        ctx = self.ctx
        ctx.shared.ready[id(self)] = bool(self.feed)
        self.unfilled = False
        if not self.feed:
            return
        allowed = [nt for nt in self.node_types if ctx.cutoff.may_start_range(nt, now)]
        if not allowed:
            if not self.cut:
                self.cut = True
                log.warning("no range can finish before the allocation ends: starting no more")
            return
        self.capacity.poll(now)
        fresh_from = self.feed.cursor
        bundles: list[tuple[str, Sequence[int]]] = []
        taken = 0
        limit, self.answered = top_up_limit(self.answered, TOP_UP_RANGES), 0
        fastest, means = by_speed(ctx.estimates, allowed)
        for nt in fastest:  # steps sharing a node type share its window
            free = ctx.shared.free_on(nt, id(self), self.capacity.window[nt])
            if free > 0 and not ctx.shared.may_use(nt, id(self)):
                continue
            if nt != fastest[0] and means:  # slower for this step: no prefetch, no tail
                best = fastest[0]
                backlog = self.feed.left() + self.in_flight.ranges_on(best)
                workers = self.capacity.workers.get(best) or ctx.backend.expected_workers(best)
                if not worth_a_slower_node_type(means[nt], means[best], backlog, workers):
                    continue
                free = min(free, self.capacity.workers.get(nt, 0) - self.in_flight.tasks(nt))
            sizes = self.capacity.sizer(nt, now, self.feed.left)
            while free > 0 and self.feed and taken < limit:
                bundles.append((nt, self.feed.take(sizes())))
                taken += len(bundles[-1][1])
                free -= 1
            self.unfilled |= free > 0 and bool(self.feed)
        if not bundles:
            return
        # once ranges are running in the ledger they must be in flight too: a Ctrl-C in
        # between would leave them running with no task (held back until submitted)
        with shielded():
            attempts = ctx.ledger.start_ranges(bundles, now, fresh_from)
            ctx.counters.last_range_started = now
            name, params = ctx.payload
            output_dir, function, step = str(ctx.output_dir), self.spec.function, self.name
            priority = self.spec.priority
            allowances: dict[tuple[str, int], float] = {}  # the same for most bundles
            timeouts: dict[str, float] = {}
            for (nt, indices), tries in zip(bundles, attempts, strict=True):
                work = list(zip(indices, tries, strict=True))
                allowance = allowances.get((nt, len(work)))
                if allowance is None:
                    allowance = ctx.timeouts.bundle_allowance(nt, len(work))
                    allowances[nt, len(work)] = allowance
                    timeouts[nt] = ctx.timeouts.current(nt)
                bid = self.in_flight.add(nt, work, allowance, now)
                args = (name, params, ctx.plan, pack(work), output_dir, timeouts[nt])
                ctx.submit(step, bid, nt, Call(function=function, args=args, priority=priority))
                crash_point("submitted")

    # --- results -----------------------------------------------------------------------------
    def handle(self, done: list[tuple[Any, Future]], now: float) -> None:
        """Record finished tasks: every range of the batch in one ledger transaction."""
        ctx = self.ctx
        batches: list[TaskOutcomes] = []
        for bid, future in done:
            bundle = self.in_flight.pop(bid)
            if bundle is not None:
                self.answered += len(bundle.work)
            exc = future.exception()
            if exc is not None:
                if bundle is not None:  # (an abandoned task's loss is old news)
                    lost = self.ctx.backend.lost(exc)  # with its worker, or failed
                    outcome = Outcome.LOST if lost else Outcome.FAILED
                    batches.append(unanswered(bundle, outcome, error_text(exc), now))
                continue
            reply: BundleResult = unpack(future.result())
            ctx.pools.result_from(reply.where.pool, now)
            if bundle is None:  # given up on (timed out) and redone: keep a record only
                late = tuple(dataclasses.replace(r, outcome=Outcome.LATE) for r in reply.results)
                batches.append(
                    TaskOutcomes(
                        node_type="?",
                        where=reply.where,
                        results=late,
                        transform_starts=reply.transform_starts,
                    )
                )
                continue
            ctx.counters.workers.add(reply.where.worker or "?")
            if reply.setup_seconds:
                ctx.counters.payload_inits += 1
            batches.append(
                TaskOutcomes(
                    node_type=bundle.node_type,
                    where=reply.where,
                    results=reply.results,
                    setup_seconds=reply.setup_seconds or None,
                    transform_starts=reply.transform_starts,
                )
            )
        self._record(batches)

    def _record(self, batches: list[TaskOutcomes]) -> None:
        """Record outcomes in one transaction and act on each range's new state."""
        if not batches:
            return
        ctx = self.ctx
        states = ctx.ledger.record(batches, ctx.budget)
        done_state = RangeState.DONE
        for batch, new_states in zip(batches, states, strict=True):
            results = batch.results
            if all(state is done_state for state in new_states):  # the hot path
                self._count_done(results, batch.node_type)
                continue
            done: list[RangeResult] = []
            for r, state in zip(results, new_states, strict=True):
                if state is done_state:
                    done.append(r)
                    continue
                if r.failure is FailureKind.NO_SPACE:
                    ctx.disk_full(r.error or "no space left on device")
                if state is RangeState.FAILED:
                    if r.outcome is Outcome.FAILED:
                        ctx.counters.failures += 1
                    log.info("range %d attempt %d %s: %s", r.index, r.attempt, r.outcome, r.error)
                    self.feed.retry_first(r.index)  # first, so its merge group completes soon
                elif state is RangeState.FATAL:
                    ctx.counters.failures += 1
                    ctx.counters.fatal_ranges.add(r.index)
                    log.error("range %d is fatal after attempt %d: %s", r.index, r.attempt, r.error)
            if done:
                self._count_done(done, batch.node_type)

    def _count_done(self, done: Sequence[RangeResult], node_type: str) -> None:
        ctx = self.ctx
        events = 0
        durations = []
        first = last = None
        # once per range: the hot path of a fast campaign (a reply's plain tuples if
        # it has them: index, attempt, outcome, started, finished, ..., n_events at 8)
        rows = getattr(done, "rows", None)
        if rows is None:
            rows = [(r.index, 0, 0, r.started, r.finished, 0, 0, 0, r.n_events) for r in done]
        for row in rows:
            events += row[8] or 0
            started, finished = row[3], row[4]
            if started is not None and finished is not None:
                durations.append(finished - started)
                if first is None or started < first:
                    first = started
                if last is None or finished > last:
                    last = finished
        if durations:
            ctx.counters.worked(first, last)
        ctx.counters.ranges_finished(node_type, len(done), events)
        ctx.estimates.ranges(node_type).extend(durations)
        self.emit(RangesDone([row[0] for row in rows]))

    # --- hung work ---------------------------------------------------------------------------
    def next_deadline(self, now: float) -> float:
        """The first bundle's deadline; while a node type is a suspect, a look every
        ``WATCHDOG_SECONDS`` until its watch ends."""
        due = self.in_flight.earliest_deadline()
        return min(due, now + WATCHDOG_SECONDS) if self._suspects else due

    def connecting(self) -> bool:
        """Ranges are ready and fewer workers connected than expected (Parsl says
        nothing when a pool connects: the loop counts them again while this holds).
        Only node types whose pools the driver sees count (not an endpoint's)."""
        if not self.ctx.shared.ready.get(id(self)):
            return False
        return self.capacity.short_of_workers()

    def check(self, now: float) -> None:
        """Give up on bundles past their deadline; end worker pools that stopped answering.

        A timed-out bundle makes its node type a suspect for one more allowance: a
        pool that had answered shortly before the deadline may be found quiet for
        long enough a few checks later.
        """
        for nt, (allowance, until) in list(self._suspects.items()):
            if now > until:
                del self._suspects[nt]
            else:
                self.ctx.end_wedged_pools(nt, allowance, now)
        self.capacity.poll(now)  # (top_up does not, once every range has been sent)
        expired = self.in_flight.expire(now, self.capacity.idle())
        if not expired:
            return
        batches = []
        for b in expired:
            err = f"no result after {b.allowance:.0f} s: presumed hung, redone elsewhere"
            batches.append(unanswered(b, Outcome.TIMEOUT, err, now))
            self.ctx.counters.timeouts += len(b.work)
        log.warning("%d ranges timed out; redoing them", sum(len(b.work) for b in expired))
        self._record(batches)
        for b in expired:
            self._suspects[b.node_type] = (b.allowance, now + b.allowance)
        for nt, (allowance, _) in self._suspects.items():
            self.ctx.end_wedged_pools(nt, allowance, now)


def by_speed(estimates: Estimates, node_types: list[str]) -> tuple[list[str], dict[str, float]]:
    """A step's node types fastest first by its own range durations, once each has enough
    measured (until then, in the step's order of preference, and no durations)."""
    measured = {
        nt: (estimates.ranges(nt).count, estimates.ranges(nt).percentile(0.5)) for nt in node_types
    }
    return fastest_first(node_types, measured)


def unanswered(bundle: Bundle, outcome: Outcome, error: str, now: float) -> TaskOutcomes:
    """Every range of a task that gave no result (lost, failed, timed out) as one batch."""
    results = tuple(
        RangeResult(index=i, attempt=a, outcome=outcome, finished=now, error=error)
        for i, a in bundle.work
    )
    return TaskOutcomes(node_type=bundle.node_type, where=NOWHERE, results=results)
