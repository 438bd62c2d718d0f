"""A run's figures added up over the steps of a chain (one step: its own figures)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from parsl_es.engine.context import EngineContext
from parsl_es.engine.ending import RunEnd, decide
from parsl_es.engine.result import Progress, RunResult, RunStatus

_SUMMED = (
    "events_total",
    "events_done",
    "ranges_total",
    "ranges_done",
    "ranges_in_flight",
    "failures",
    "fatal",
    "merges_total",
    "merges_done",
    "merges_validated",
    "tasks_in_flight",
)


def combined(per_step: Sequence[Progress], rate: float) -> Progress:
    """One step's progress as it is; a chain's summed, each event once per step."""
    if len(per_step) == 1 and per_step[0].step is None:
        return dataclasses.replace(per_step[0], events_per_second=rate)
    sums = {name: sum(getattr(p, name) for p in per_step) for name in _SUMMED}
    first = per_step[0]
    return Progress(
        **sums,
        elapsed=first.elapsed,
        events_per_second=rate,
        stopping=first.stopping,
        steps=tuple(per_step),
    )


def run_result(
    contexts: Sequence[EngineContext],
    *,
    status: RunStatus,
    message: str,
    wall_seconds: float,
    ended: float,
    fatal_ids: list[str],
    failed_merges: list[int | str],
) -> RunResult:
    """The run's result: a chain's counts are sums over its steps, and each step's own."""
    counters = [c.counters for c in contexts]
    per_node_type: dict[str, int] = {}
    for c in counters:
        for nt, n in c.per_node_type.items():
            per_node_type[nt] = per_node_type.get(nt, 0) + n
    verdicts = [c.campaign_verdict for c in contexts]
    validation = None
    if len(contexts) == 1 and verdicts[0] is not None:
        v = verdicts[0]
        validation = {**v.report, "passed": v.passed, "problems": list(v.problems)}
    elif any(v is not None for v in verdicts):
        validation = {
            "passed": all(c.ledger.campaign_passed() for c in contexts),
            "steps": {
                c.step: {"passed": v.passed, "problems": list(v.problems)}
                for c, v in zip(contexts, verdicts, strict=True)
                if v is not None
            },
        }
    per_step = {}
    if contexts[0].step is not None:
        per_step = {
            c.step: {
                "events": c.counters.events,
                "ranges": c.counters.ranges,
                "merges": c.counters.merges,
                "events_done": c.counters.events_done,
                "events_total": c.plan.events,
                # over the stretch the step was at work: its own rate, not the chain's
                "events_per_second": c.counters.events / c.counters.span_seconds
                if c.counters.span_seconds > 0
                else 0.0,
                "span_seconds": c.counters.span_seconds,
                "per_node_type": dict(c.counters.per_node_type),
                "validated": c.ledger.campaign_passed(),
            }
            for c in contexts
        }
    return RunResult(
        status=status,
        wall_seconds=wall_seconds,
        events_this_run=sum(c.events for c in counters),
        ranges_this_run=sum(c.ranges for c in counters),
        merges_this_run=sum(c.merges for c in counters),
        failures=sum(c.failures for c in counters),
        fatal_ranges=fatal_ids,
        failed_merges=failed_merges,
        payload_inits=sum(c.payload_inits for c in counters),
        workers=len(set().union(*(c.workers for c in counters))),
        validation=validation,
        message=message,
        per_node_type=per_node_type,
        last_range_started=max(
            (c.last_range_started for c in counters if c.last_range_started is not None),
            default=None,
        ),
        ended=ended,
        allocation_end=contexts[0].cutoff.end,
        timeouts=sum(c.timeouts for c in counters),
        wedged_pools=sum(c.wedged_pools for c in counters),
        per_step=per_step,
    )


def ended_run(
    contexts: Sequence[EngineContext],
    *,
    now: float,
    started: float,
    stopped: bool,
    held_back: bool,
    no_space: bool,
    allocation_end: float | None,
) -> RunResult:
    """How the run ended (``ending.decide`` on what the steps left) and its figures.

    ``held_back``: a step started no more work because none could finish before the
    allocation's end.
    """
    verdicts = [c.campaign_verdict for c in contexts if c.campaign_verdict is not None]
    fatal_ids = [
        _labelled(c, c.plan.range(i).id) for c in contexts for i in sorted(c.counters.fatal_ranges)
    ]
    failed_merges: list[int | str] = [
        _labelled(c, str(g)) if c.step else g
        for c in contexts
        for g in sorted(c.counters.failed_merges)
    ]
    status, message = decide(
        RunEnd(
            campaign_passed=all(c.ledger.campaign_passed() for c in contexts),
            no_space=no_space,
            stopped=stopped,
            out_of_time=held_back or any(c.cutoff.must_leave(now) for c in contexts),
            allocation_end=allocation_end,
            events_left=sum(c.plan.events - c.counters.events_done for c in contexts),
            fatal_ranges=fatal_ids,
            failed_merges=len(failed_merges),
            validation_problems=[p for v in verdicts for p in v.problems],
        )
    )
    return run_result(
        contexts,
        status=status,
        message=message,
        wall_seconds=now - started,
        ended=now,
        fatal_ids=fatal_ids,
        failed_merges=failed_merges,
    )


def _labelled(ctx: EngineContext, what: str) -> str:
    """A chain step's range or group named with its step (``sim:range-id``)."""
    return f"{ctx.step}:{what}" if ctx.step else what
