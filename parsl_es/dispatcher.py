"""The event-service loop: pull ranges into a bounded window, merge on the fly.

One thread owns the ledger. Parsl completion callbacks only put the finished
future on a queue; the loop drains the queue in batches, records every outcome
of a batch in one ledger transaction, tops the in-flight window of each node
type back up, submits a merge the moment a group's last range is recorded done
(with the group's range records from the ledger), chains the per-merge
validation to the merge's future, and finally submits the campaign validation
chained to the per-merge validations' futures.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import logging
import math
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.apps import RangeResult, pack, unpack
from parsl_es.bundling import bundle_size
from parsl_es.crashpoints import crash_point
from parsl_es.failures import INFRASTRUCTURE, LOST_WORKER_ERRORS, NO_SPACE, PERMANENT, TIMEOUT
from parsl_es.hung import PoolWatch, RangeTimeouts, TimeoutPolicy
from parsl_es.ledger import LOST_FACTOR, Ledger, RangeOutcome
from parsl_es.ranges import RangePlan
from parsl_es.session import SiteSession, workers_of
from parsl_es.walltime import Cutoff

log = logging.getLogger(__name__)

#: How often the connected-worker count of each executor is asked for.
WORKER_POLL_SECONDS = 1.0
#: Progress rates (and so the ETA) are measured over this recent stretch.
RATE_WINDOW_SECONDS = 30.0
#: How often in-flight bundles are checked against their deadlines.
HUNG_CHECK_SECONDS = 1.0
#: Default range timeout policy (the campaign's ``range_timeout`` replaces it).
DEFAULT_TIMEOUTS = TimeoutPolicy(factor=5.0, floor=60.0, ceiling=3600.0)


@dataclass
class _Bundle:
    """Ranges travelling as one Parsl task, and when the driver gives up waiting."""

    node_type: str
    work: list[tuple[int, int]]  # (range index, attempt)
    allowance: float  # seconds from start to deadline
    deadline: float


@dataclass(frozen=True)
class Steps:
    """The node types that run each step, resolved against the site."""

    simulate: list[str]
    merge: str
    validate: str


@dataclass
class Progress:
    """A snapshot for progress displays (CLI bar, notebook widget, logs)."""

    events_total: int
    events_done: int
    ranges_total: int
    ranges_done: int
    ranges_in_flight: int
    failures: int
    fatal: int
    merges_total: int
    merges_done: int
    merges_validated: int
    elapsed: float
    events_per_second: float
    stopping: bool = False
    tasks_in_flight: int = 0  # Parsl tasks (bundles of ranges)

    @property
    def eta_seconds(self) -> float | None:
        left = self.events_total - self.events_done
        return left / self.events_per_second if self.events_per_second > 0 else None


@dataclass
class RunResult:
    """What one run of the driver achieved (a campaign may need several runs)."""

    status: str  # complete | stopped | walltime | no_space | failed
    wall_seconds: float
    events_this_run: int
    ranges_this_run: int
    merges_this_run: int
    failures: int
    fatal_ranges: list[str]
    failed_merges: list[int]
    payload_inits: int
    workers: int
    validation: dict[str, Any] | None
    message: str
    per_node_type: dict[str, int] = field(default_factory=dict)
    last_range_started: float | None = None
    ended: float | None = None
    allocation_end: float | None = None
    timeouts: int = 0
    wedged_pools: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events_this_run / self.wall_seconds if self.wall_seconds > 0 else 0.0


class Dispatcher:
    """Runs one campaign on a loaded site until it is complete, stuck or stopped."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        session: SiteSession,
        output_dir: Path,
        payload_name: str,
        payload_params: dict[str, Any],
        steps: Steps,
        attempts: int,
        bundle_size: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        stop: threading.Event | None = None,
        stop_grace_seconds: float = 30.0,
        cutoff: Cutoff | None = None,
        timeouts: TimeoutPolicy = DEFAULT_TIMEOUTS,
    ) -> None:
        self.ledger = ledger
        self.session = session
        self.output_dir = output_dir
        self.plan: RangePlan = ledger.plan
        self.payload = (payload_name, payload_params)
        self.steps = steps
        self.attempts = attempts
        self.bundle_size = None if bundle_size is None else max(1, bundle_size)
        self.on_progress = on_progress
        self.stop = stop or threading.Event()
        self.stop_grace_seconds = stop_grace_seconds
        self.cutoff = cutoff or Cutoff(end=None, margin=0.0)
        self._cut = False  # no range may start any more before the allocation ends
        self._deferred_merges: set[int] = set()
        self._last_range_start: float | None = None

        # one estimate of range durations per node type, for the cut-off and the timeouts
        self.timeouts = RangeTimeouts(timeouts, self.cutoff.range_estimate)
        self._pools = PoolWatch()
        self._bundles: dict[int, _Bundle] = {}
        self._bundle_ids = itertools.count()
        self._workers_now: dict[str, int] = {}
        self._last_hung_check = 0.0
        self._no_space: str | None = None

        self._done_q: queue.SimpleQueue[tuple[str, Any, Future]] = queue.SimpleQueue()
        self._retry: deque[int] = deque()
        self._cursor = 0
        self._in_flight: dict[str, int] = dict.fromkeys(steps.simulate, 0)  # ranges
        self._tasks_in_flight: dict[str, int] = dict.fromkeys(steps.simulate, 0)  # bundles
        self._window: dict[str, int] = {}
        self._worker_poll = 0.0
        self._group_left: dict[int, int] = {}
        # merge groups in flight -> when their merge / validation task was submitted
        self._merges_in_flight: dict[int, float] = {}
        self._validations_in_flight: dict[int, float] = {}
        self._validation_futures: list[Future] = []
        self._merge_attempts: dict[int, int] = {}
        self._lost_steps: dict[tuple[str, int], int] = {}  # merges/validations lost with workers
        self._campaign_validation: Future | None = None
        self._campaign_plots: Future | None = None
        self._validation_result: dict[str, Any] | None = None
        self._already_validated = False
        self._fatal: set[int] = set()
        self._failed_merges: set[int] = set()
        self._stats = dict.fromkeys(
            ("events", "ranges", "merges", "failures", "inits", "timeouts", "wedged"), 0
        )
        self._workers: set[str] = set()
        self._per_node_type: dict[str, int] = dict.fromkeys(steps.simulate, 0)
        self._events_done = 0
        self._ranges_done = 0
        self._merges_done = 0
        self._validated = 0
        self._t0 = time.time()
        self._last_progress = 0.0
        self._rate_samples: deque[tuple[float, int]] = deque()

    # --- setup ---------------------------------------------------------------
    def _load_state(self) -> None:
        """Rebuild the in-memory view from the ledger (fresh start or resume)."""
        reset = self.ledger.reset_for_resume(self.output_dir)
        if any(reset.values()):
            log.info("resume: %s", reset)
        for sub in ("ranges", "merged", "validation"):
            removed = fileio.remove_temp_files(self.output_dir / sub)
            if removed:
                log.info("removed %d partial files in %s/", removed, sub)
        self._cursor = self.ledger.next_untouched()
        self._already_validated = self.ledger.meta("campaign_validation") == "passed"
        self._retry.extend(r["idx"] for r in self.ledger.range_rows(("ready", "failed")))
        done_per_group: dict[int, int] = {}
        for r in self.ledger.range_rows(("done", "merged")):
            done_per_group[r["merge_group"]] = done_per_group.get(r["merge_group"], 0) + 1
            self._events_done += r["n_events"]
            self._ranges_done += 1
        for m in self.ledger.merge_rows():
            g = m["group_idx"]
            if m["state"] == "done":
                self._merges_done += 1
                if m["validation"] == "passed":
                    self._validated += 1
                continue
            self._group_left[g] = (m["last_range"] - m["first_range"] + 1) - done_per_group.get(
                g, 0
            )

    # --- the loop --------------------------------------------------------------
    def run(self) -> RunResult:
        self._t0 = time.time()
        self._load_state()
        for g, left in sorted(self._group_left.items()):
            if left == 0:
                self._submit_merge(g)
        for m in self.ledger.merge_rows():
            if m["state"] == "done" and m["validation"] is None:
                self._submit_validation(m["group_idx"], dict(m))
        while True:
            try:
                self._loop()
                break
            except sqlite3.OperationalError as exc:  # the ledger could not commit
                if "full" not in str(exc):
                    raise
                self._no_space = f"ledger: {exc}"
                log.error("disk full: %s; stopping (in-flight ranges are redone on resume)", exc)
                break
            except KeyboardInterrupt:
                # Ctrl-C in a notebook (the CLI turns SIGINT into ``stop`` itself): the
                # first one stops gracefully, a second one aborts; the ledger is
                # consistent either way (transactions roll back).
                if self.stop.is_set():
                    raise
                self.stop.set()
                log.warning("interrupted: starting nothing new; interrupt again to abort")
        self._report_progress(force=True)
        return self._result(stopped=self.stop.is_set())

    def _loop(self) -> None:
        stop_deadline: float | None = None
        while True:
            if (self.stop.is_set() or self._no_space) and stop_deadline is None:
                stop_deadline = time.time() + self.stop_grace_seconds
                log.warning("stop requested: no new ranges; waiting for those in flight")
            self._check_hung()
            if stop_deadline is None:
                self._top_up()
                self._maybe_validate_campaign()
            if self._finished(stopping=stop_deadline is not None):
                break
            if stop_deadline is not None and time.time() > stop_deadline:
                log.warning("stop grace period over: leaving in-flight ranges for resume")
                break
            if self.cutoff.must_leave():
                log.warning("allocation about to end: leaving in-flight work for resume")
                break
            self._drain(timeout=0.2)
            self._report_progress()

    def _finished(self, stopping: bool) -> bool:
        sims = sum(self._in_flight.values())
        busy = sims or self._merges_in_flight or self._validations_in_flight
        finishing = self._campaign_validation is not None or self._campaign_plots is not None
        if stopping:
            return not busy and not finishing
        if busy or finishing:
            return False
        if self._cut or self._deferred_merges:
            return True
        if self._has_ranges_to_start():
            return False
        if self._validation_result is not None:
            return True
        # Nothing runs and nothing can start: complete, or stuck on fatal work.
        return bool(self._fatal or self._failed_merges) or not self._needs_validation()

    def _needs_validation(self) -> bool:
        return not self._already_validated

    def _has_ranges_to_start(self) -> bool:
        return bool(self._retry) or self._cursor < self.plan.n_ranges

    def _drain(self, timeout: float) -> None:
        """Handle every completion available now, recording ranges in one transaction."""
        try:
            items = [self._done_q.get(timeout=timeout)]
        except queue.Empty:
            return
        while True:
            try:
                items.append(self._done_q.get_nowait())
            except queue.Empty:
                break
        sims = [it for it in items if it[0] == "simulate"]
        if sims:
            self._handle_simulations(sims)
        for kind, info, fut in items:
            if kind == "merge":
                self._handle_merge(info, fut)
            elif kind == "validate":
                self._handle_validation(info, fut)
            elif kind == "campaign":
                self._handle_campaign_validation(fut)
            elif kind == "plots":
                self._handle_campaign_plots(fut)

    # --- simulation --------------------------------------------------------------
    def _window_for(self, node_type: str) -> int:
        now = time.time()
        if now - self._worker_poll > WORKER_POLL_SECONDS or node_type not in self._window:
            self._worker_poll = now
            for nt in self.steps.simulate:
                managers = self.session.managers(nt)
                workers = None if managers is None else workers_of(managers)
                if managers is not None:
                    self._pools.observe(managers, now)
                    self._workers_now[nt] = workers or 0
                if workers:
                    # Until a range of this node type has finished, one single-range
                    # task per worker: bundles are sized from the first durations.
                    known = self.cutoff.range_estimate(nt).count > 0
                    factor = self.session.site.in_flight_per_worker if known else 1.0
                    self._window[nt] = max(1, math.ceil(workers * factor))
                else:
                    # Nobody connected yet (a block still queued): queue only what the
                    # expected workers will take first, so other node types are not
                    # starved of ranges held here.
                    self._window[nt] = self.session.site.node_types[nt].expected_workers()
        return self._window[node_type]

    def _next_ranges(self, n: int) -> list[int]:
        """Indices of the next ranges to start: retries first, then untouched ones."""
        out = []
        while len(out) < n and self._retry:
            out.append(self._retry.popleft())
        take = min(n - len(out), self.plan.n_ranges - self._cursor)
        if take > 0:
            out.extend(range(self._cursor, self._cursor + take))
            self._cursor += take
        return out

    def _ranges_left(self) -> int:
        return len(self._retry) + self.plan.n_ranges - self._cursor

    def _bundle_size(self, node_type: str) -> int:
        size = self.bundle_size
        if size is None:
            est = self.cutoff.range_estimate(node_type)
            workers = (
                self._workers_now.get(node_type)
                or self.session.site.node_types[node_type].expected_workers()
            )
            size = bundle_size(
                est.mean(), workers, self._ranges_left(), self.session.site.in_flight_per_worker
            )
        fit = self.cutoff.ranges_that_fit(node_type)  # near the allocation's end
        return size if fit is None else max(1, min(size, fit))

    def _top_up(self) -> None:
        """Fill every node type's window of tasks; all new starts go to the ledger at once."""
        bundles: list[tuple[str, list[int]]] = []
        if self._has_ranges_to_start():
            allowed_now = [nt for nt in self.steps.simulate if self.cutoff.may_start_range(nt)]
            if not allowed_now and not self._cut:
                self._cut = True
                log.warning("no range can finish before the allocation ends: starting no more")
        else:
            allowed_now = []
        fresh_from = self._cursor
        for nt in allowed_now:
            free = self._window_for(nt) - self._tasks_in_flight[nt]
            while free > 0 and self._has_ranges_to_start():
                bundles.append((nt, self._next_ranges(self._bundle_size(nt))))
                free -= 1
        if not bundles:
            return
        now = time.time()
        attempts = iter(
            self.ledger.start_indices(
                [(i, nt) for nt, indices in bundles for i in indices], now, fresh_from=fresh_from
            )
        )
        self._last_range_start = now
        for nt, bundle in bundles:
            work = [(i, next(attempts)) for i in bundle]
            timeout = self.timeouts.current(nt)
            allowance = self.timeouts.bundle_allowance(nt, len(work))
            app = self.session.app("simulate_ranges", nt)
            fut = app(
                *self.payload,
                self.plan,
                pack(work),
                str(self.output_dir),
                timeout,
            )
            self._in_flight[nt] += len(work)
            self._tasks_in_flight[nt] += 1
            bid = next(self._bundle_ids)
            self._bundles[bid] = _Bundle(nt, work, allowance, now + allowance)
            fut.add_done_callback(lambda f, b=bid: self._done_q.put(("simulate", b, f)))
            crash_point("submitted")

    def _handle_simulations(self, items: list[tuple[str, Any, Future]]) -> None:
        """Record finished tasks: successes in batched ledger statements, the rest one by one."""
        now = time.time()
        failures: list[RangeOutcome] = []
        successes: list[tuple[list[RangeResult], str, dict[str, Any]]] = []
        for _, bid, fut in items:
            bundle = self._bundles.pop(bid, None)
            if bundle is not None:
                self._in_flight[bundle.node_type] -= len(bundle.work)
                self._tasks_in_flight[bundle.node_type] -= 1
            exc = fut.exception()
            if exc is not None:
                if bundle is not None:  # (an abandoned task's loss is old news)
                    failures.extend(_lost_or_failed(bundle, exc, now))
                continue
            task = fut.result()
            where = {**task["where"], "setup": task["setup_time"] or None}
            results: list[RangeResult] = unpack(task["results"])
            self._pools.result_from(where.get("pool"), now)
            if bundle is None:  # given up on (timed out) and redone: keep a record only
                failures.extend(
                    dataclasses.replace(_outcome_from_result(r, "?", where), outcome="late")
                    for r in results
                )
                continue
            nt = bundle.node_type
            self._workers.add(where.get("worker", "?"))
            if task["setup_time"]:
                self._stats["inits"] += 1
            ok = [r for r in results if r.ok]
            if ok:
                successes.append((ok, nt, where))
            for r in results:
                if r.ok:
                    continue
                failures.append(_outcome_from_result(r, nt, where))
                if r.failure == NO_SPACE and not self._no_space:
                    self._no_space = r.error or "no space left on device"
                    log.error("disk full: %s; stopping", self._no_space)
        if successes:
            applied = self.ledger.record_successes(successes)
            for (ok, nt, _), flags in zip(successes, applied, strict=True):
                self._count_done([r for r, a in zip(ok, flags, strict=True) if a], nt)
        if failures:
            self._apply(failures)

    def _apply(self, outcomes: list[RangeOutcome]) -> None:
        """Record outcomes in one transaction and act on each range's new state."""
        states = self.ledger.record_outcomes(outcomes, max_failures=self.attempts)
        for o, state in zip(outcomes, states, strict=True):
            if state == "done":
                self._count_done([o], o.node_type or "?")
            elif state == "failed":
                if o.outcome == "failed":
                    self._stats["failures"] += 1
                log.info("range %d attempt %d %s: %s", o.index, o.attempt, o.outcome, o.error)
                self._retry.appendleft(o.index)  # first, so its merge group completes soon
            elif state == "fatal":
                self._stats["failures"] += 1
                self._fatal.add(o.index)
                log.error("range %d is fatal after attempt %d: %s", o.index, o.attempt, o.error)

    # --- hung work -----------------------------------------------------------------
    def _check_hung(self) -> None:
        """Give up on bundles past their deadline; end worker pools that stopped answering."""
        now = time.time()
        if now - self._last_hung_check < HUNG_CHECK_SECONDS:
            return
        self._last_hung_check = now
        self._check_slow_merges(now)
        expired: list[int] = []
        for bid, b in self._bundles.items():
            if self._workers_now.get(b.node_type, 1) == 0:
                b.deadline = max(b.deadline, now + b.allowance)  # no worker to run it yet
            elif now > b.deadline:
                expired.append(bid)
        if not expired:
            return
        outcomes = []
        node_types = set()
        for bid in expired:
            b = self._bundles.pop(bid)
            node_types.add((b.node_type, b.allowance))
            self._in_flight[b.node_type] -= len(b.work)
            self._tasks_in_flight[b.node_type] -= 1
            self._stats["timeouts"] += len(b.work)
            err = f"no result after {b.allowance:.0f} s: presumed hung, redone elsewhere"
            outcomes.extend(
                RangeOutcome(
                    index=i,
                    attempt=a,
                    outcome="timeout",
                    node_type=b.node_type,
                    finished=now,
                    error=err,
                )
                for i, a in b.work
            )
        log.warning("%d ranges timed out; redoing them", len(outcomes))
        self._apply(outcomes)
        for nt, allowance in node_types:
            self._end_wedged_pools(nt, allowance, now)

    def _check_slow_merges(self, now: float) -> None:
        """A merge or validation running far longer than merges do may sit on a wedged pool.

        It is not abandoned (a late merge would overwrite the redone file); the pools
        of its node type that stopped answering are ended, which returns it as lost.
        """
        allowance = 2 * self.timeouts.timeout_for(self.cutoff.merges) + 10.0
        for tasks, nt in (
            (self._merges_in_flight, self.steps.merge),
            (self._validations_in_flight, self.steps.validate),
        ):
            if any(now - started > allowance for started in tasks.values()):
                self._end_wedged_pools(nt, allowance, now)

    def _end_wedged_pools(self, node_type: str, quiet_for: float, now: float) -> None:
        managers = self.session.managers(node_type) or []
        for m in self._pools.wedged(managers, quiet_for, now):
            block = str(m.get("block_id"))
            log.error(
                "worker pool %s (block %s of %s) holds %s tasks and returned nothing for "
                "%.0f s: ending its block",
                m.get("manager"),
                block,
                node_type,
                m.get("tasks"),
                quiet_for,
            )
            if self.session.end_block(node_type, block):
                self._stats["wedged"] += 1

    def _count_done(self, done: list[Any], node_type: str) -> None:
        """Count ranges recorded done (``RangeResult``s or outcomes); merge full groups."""
        if not done:
            return
        events = sum(r.n_events or 0 for r in done)
        self._events_done += events
        self._ranges_done += len(done)
        self._stats["events"] += events
        self._stats["ranges"] += len(done)
        self._per_node_type[node_type] = self._per_node_type.get(node_type, 0) + len(done)
        durations = [r.finished - r.started for r in done if r.started and r.finished]
        self.cutoff.range_estimate(node_type).extend(durations)  # the timeouts' too
        per_merge = self.plan.ranges_per_merge
        left = self._group_left
        for r in done:
            g = r.index // per_merge
            left[g] -= 1
            if left[g] == 0:
                self._submit_merge(g)

    # --- merges and validation ---------------------------------------------------
    def _submit_merge(self, g: int) -> None:
        if not self.cutoff.may_start_merge():
            self._deferred_merges.add(g)
            log.info("merge %d left for the next allocation: it would not finish in time", g)
            return
        group = self.plan.group(g)
        nt = self.steps.merge
        self._merge_attempts[g] = self.ledger.start_merge(g, nt, time.time())
        # The group's range files, as recorded: every one is done (and durable) by now.
        known = self.ledger.group_range_outputs(group)
        app = self.session.app("merge_group", nt)
        fut = app(*self.payload, group, str(self.output_dir), pack(known))
        self._merges_in_flight[g] = time.time()
        fut.add_done_callback(lambda f: self._done_q.put(("merge", g, f)))
        self._submit_validation(g, fut)
        crash_point("merge-submitted")

    def _submit_validation(self, g: int, merged: Future | dict[str, Any]) -> None:
        """Validate a merged file; chained to its merge future when there is one."""
        group = self.plan.group(g)
        app = self.session.app("validate_merge", self.steps.validate)
        fut = app(*self.payload, group, str(self.output_dir), merged)
        self._validations_in_flight[g] = time.time()
        fut.add_done_callback(lambda f: self._done_q.put(("validate", g, f)))

    def _handle_merge(self, g: int, fut: Future) -> None:
        self._merges_in_flight.pop(g, None)
        exc = fut.exception()
        if exc is None:
            merged = fut.result()
            self._pools.result_from(merged.get("pool"), time.time())
            self.cutoff.merges.add(merged["finished"] - merged["started"])
            self.ledger.finish_merge(g, merged)
            crash_point("merge-recorded")
            self._merges_done += 1
            self._stats["merges"] += 1
            return
        err = f"{type(exc).__name__}: {exc}"[:2000]
        self.ledger.fail_merge(g, err)
        problems = getattr(exc, "problems", None)
        if type(exc).__name__ == "DamagedRangeFiles" and isinstance(problems, dict):
            self._redo_damaged(g, problems)
            return
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._no_space = f"merge {g}: {exc}"
            return
        if self._lost_again(exc, ("merge", g)):
            log.warning("merge %d lost with its worker; submitting it again", g)
            self._submit_merge(g)
            return
        if self._merge_attempts.get(g, 0) < self.attempts and not self.stop.is_set():
            log.warning("merge %d failed (%s); retrying", g, err)
            self._submit_merge(g)
        else:
            log.error("merge %d failed for good: %s", g, err)
            self._failed_merges.add(g)

    def _lost_again(self, exc: BaseException, step: tuple[str, int]) -> bool:
        """A merge or validation lost with its worker (not its own fault): run it again?

        Up to ``LOST_FACTOR`` times the campaign's attempts, as for ranges.
        """
        if type(exc).__name__ not in LOST_WORKER_ERRORS or self.stop.is_set():
            return False
        self._lost_steps[step] = self._lost_steps.get(step, 0) + 1
        return self._lost_steps[step] <= LOST_FACTOR * self.attempts

    def _redo_damaged(self, g: int, problems: dict[int, str]) -> None:
        """Simulate a group's damaged range files again; the group merges once they are done."""
        reset = self.ledger.redo_damaged(problems, time.time())
        log.warning("merge %d: %d range files damaged or missing; redoing them", g, len(reset))
        for idx in reset:
            n = self.plan.range(idx).n_events
            self._events_done -= n
            self._ranges_done -= 1
        self._group_left[g] = self._group_left.get(g, 0) + len(reset)
        self._retry.extendleft(reset)
        self._merge_attempts[g] = 0

    def _handle_validation(self, g: int, fut: Future) -> None:
        self._validations_in_flight.pop(g, None)
        exc = fut.exception()
        if exc is not None:
            if _is_dependency_failure(exc):
                return  # its merge failed; the merge's own handling retries it
            if self._lost_again(exc, ("validate", g)):
                log.warning("validation of merge %d lost with its worker; again", g)
                self._submit_validation(g, dict(self.ledger.merge_row(g)))
                return
            self.ledger.record_validation(g, False, f"{type(exc).__name__}: {exc}"[:2000])
            log.error("validation of merge %d raised: %s", g, exc)
            self._failed_merges.add(g)
            return
        res = fut.result()
        self._pools.result_from(res.get("pool"), time.time())
        self.ledger.record_validation(g, res["passed"], "; ".join(res["problems"]) or None, res)
        if res["passed"]:
            self._validated += 1
            self._validation_futures.append(fut)
        else:
            log.error("merge %d failed validation: %s", g, res["problems"])
            self._failed_merges.add(g)

    def _maybe_validate_campaign(self) -> None:
        if self._campaign_validation is not None or self._validation_result is not None:
            return
        if self._merges_in_flight or self._validations_in_flight:
            return
        if self._validated < self.plan.n_merges or not self._needs_validation():
            return
        merges = [dict(m) for m in self.ledger.merge_rows()]
        # The exactly-once proof and the physics plots run side by side (two workers):
        # at the end of a campaign everything else is idle.
        args = (*self.payload, self.plan, str(self.output_dir), merges)
        validate = self.session.app("validate_campaign", self.steps.validate)
        fut = validate(*args, inputs=self._validation_futures)
        self._campaign_validation = fut
        fut.add_done_callback(lambda f: self._done_q.put(("campaign", None, f)))
        plots = self.session.app("plot_campaign", self.steps.validate)(
            *args, inputs=self._validation_futures
        )
        self._campaign_plots = plots
        plots.add_done_callback(lambda f: self._done_q.put(("plots", None, f)))

    def _handle_campaign_plots(self, fut: Future) -> None:
        self._campaign_plots = None
        exc = fut.exception()
        if exc is not None:  # the proof stands without its pictures
            log.warning("campaign histograms could not be plotted: %s", exc)
            return
        res = fut.result()
        run = {k: res.get(k) for k in ("worker", "started", "finished")}
        self.ledger.set_meta("campaign_plots_run", json.dumps(run))

    def _handle_campaign_validation(self, fut: Future) -> None:
        self._campaign_validation = None
        self._validation_futures = []
        exc = fut.exception()
        if exc is not None and self._lost_again(exc, ("campaign", 0)):
            log.warning("campaign validation lost with its worker; it runs again")
            return  # _maybe_validate_campaign submits it again
        if exc is not None:
            res = {"passed": False, "problems": [f"{type(exc).__name__}: {exc}"]}
        else:
            res = fut.result()
        self._validation_result = res
        for group, problem in res.get("bad_groups", {}).items():
            self.ledger.record_validation(group, False, problem)  # redone by resume
        if res.get("started"):  # where and when, for the report's timeline
            run = {k: res.get(k) for k in ("worker", "started", "finished")}
            self.ledger.set_meta("campaign_validation_run", json.dumps(run))
        self.ledger.set_meta("campaign_validation", "passed" if res["passed"] else "failed")

    # --- reporting ---------------------------------------------------------------
    def progress(self) -> Progress:
        now = time.time()
        elapsed = now - self._t0
        return Progress(
            events_total=self.plan.events,
            events_done=self._events_done,
            ranges_total=self.plan.n_ranges,
            ranges_done=self._ranges_done,
            ranges_in_flight=sum(self._in_flight.values()),
            failures=self._stats["failures"],
            fatal=len(self._fatal),
            merges_total=self.plan.n_merges,
            merges_done=self._merges_done,
            merges_validated=self._validated,
            elapsed=elapsed,
            events_per_second=self._recent_rate(now),
            stopping=self.stop.is_set(),
            tasks_in_flight=sum(self._tasks_in_flight.values()),
        )

    def _recent_rate(self, now: float) -> float:
        """Events/s over the last RATE_WINDOW seconds: what the ETA should extrapolate."""
        samples = self._rate_samples
        samples.append((now, self._stats["events"]))
        while len(samples) > 2 and now - samples[1][0] > RATE_WINDOW_SECONDS:
            samples.popleft()
        t_then, ev_then = samples[0]
        if now - t_then <= 0:
            return 0.0
        return (self._stats["events"] - ev_then) / (now - t_then)

    def _report_progress(self, force: bool = False) -> None:
        now = time.time()
        if self.on_progress and (force or now - self._last_progress > 0.25):
            self._last_progress = now
            self.on_progress(self.progress())

    def _result(self, stopped: bool) -> RunResult:
        wall = time.time() - self._t0
        complete = self.ledger.meta("campaign_validation") == "passed"
        fatal_ids = [self.plan.range(i).id for i in sorted(self._fatal)]
        if complete:
            status, message = "complete", "campaign complete: every event merged and validated"
        elif self._no_space:
            status = "no_space"
            message = f"stopped: the disk is full ({self._no_space}); free space, then resume"
        elif stopped:
            status = "stopped"
            message = "stopped before the campaign was complete"
        elif self._cut or self._deferred_merges or self.cutoff.must_leave():
            status = "walltime"
            left = self.plan.events - self._events_done
            end = time.strftime("%H:%M:%S", time.localtime(self.cutoff.end or 0))
            message = (
                f"allocation ends at {end}: stopped starting ranges that could not finish in "
                f"time; {left} events left for the next allocation"
            )
        elif self._fatal or self._failed_merges:
            status = "failed"
            parts = []
            if fatal_ids:
                parts.append(f"{len(fatal_ids)} ranges fatal (e.g. {fatal_ids[0]})")
            if self._failed_merges:
                parts.append(f"{len(self._failed_merges)} merge groups failed")
            message = "campaign incomplete: " + ", ".join(parts)
        else:
            status = "failed"
            problems = (self._validation_result or {}).get("problems", [])
            message = "campaign validation failed: " + "; ".join(problems[:3])
        return RunResult(
            status=status,
            wall_seconds=wall,
            events_this_run=self._stats["events"],
            ranges_this_run=self._stats["ranges"],
            merges_this_run=self._stats["merges"],
            failures=self._stats["failures"],
            fatal_ranges=fatal_ids,
            failed_merges=sorted(self._failed_merges),
            payload_inits=self._stats["inits"],
            workers=len(self._workers),
            validation=self._validation_result,
            message=message,
            per_node_type=dict(self._per_node_type),
            last_range_started=self._last_range_start,
            ended=time.time(),
            allocation_end=self.cutoff.end,
            timeouts=self._stats["timeouts"],
            wedged_pools=self._stats["wedged"],
        )


#: Ledger outcome of each kind of failure reported by a worker.
_FAILURE_OUTCOMES = {
    PERMANENT: "fatal",
    INFRASTRUCTURE: "lost",
    NO_SPACE: "lost",
    TIMEOUT: "timeout",
}


def _lost_or_failed(bundle: _Bundle, exc: BaseException, now: float) -> list[RangeOutcome]:
    """Every range of a task that raised: lost with its worker, or failed."""
    outcome = "lost" if type(exc).__name__ in LOST_WORKER_ERRORS else "failed"
    err = f"{type(exc).__name__}: {exc}"[:2000]
    return [
        RangeOutcome(
            index=i,
            attempt=a,
            outcome=outcome,
            node_type=bundle.node_type,
            finished=now,
            error=err,
        )
        for i, a in bundle.work
    ]


def _outcome_from_result(res: RangeResult, node_type: str, where: dict[str, Any]) -> RangeOutcome:
    """A range's result as a ledger outcome (used for failures and late results)."""
    outcome = "done" if res.ok else _FAILURE_OUTCOMES.get(res.failure or "", "failed")
    return RangeOutcome(
        res.index,
        res.attempt,
        outcome,
        node_type,
        where.get("host"),
        where.get("worker"),
        where.get("slurm_job"),
        where.get("accelerator"),
        res.started,
        res.finished,
        res.output,
        res.size,
        res.checksum,
        res.n_events,
        res.error,
    )


def _is_dependency_failure(exc: BaseException) -> bool:
    return type(exc).__name__ == "DependencyError"
