"""What ``es-run submit`` and ``resume`` share around a run: signals, allocation end, outcome."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from parsl_es.backends.base import WakingEvent
from parsl_es.engine.result import RunResult, RunStatus
from parsl_es.errors import UserError
from parsl_es.interrupts import Interrupted, interrupt

#: Each way a run ends: its exit code, whether its last line goes to stderr, and that line.
OUTCOMES: dict[RunStatus, tuple[int, bool, str]] = {
    RunStatus.COMPLETE: (0, False, "outputs: {out}/merged   validation: {out}/validation"),
    RunStatus.FAILED: (
        1,
        True,
        "see {out}/logs/driver.log; 'es-run resume {out}' retries what failed",
    ),
    RunStatus.NO_SPACE: (2, True, "error: {message}: es-run resume {out}"),
    RunStatus.STOPPED: (3, True, "campaign incomplete; continue it with: es-run resume {out}"),
    RunStatus.WALLTIME: (
        4,
        True,
        "campaign incomplete (allocation ending); in the next allocation run: es-run resume {out}",
    ),
}


def finish(result: RunResult, output: Path, out: Console, err: Console) -> int:
    """Print how the run ended; return its exit code (``OUTCOMES``)."""
    out.print(
        f"{result.message}\n"
        f"this run: {result.events_this_run} events in {result.ranges_this_run} ranges, "
        f"{result.merges_this_run} merges, {result.wall_seconds:.1f} s wall, "
        f"{result.events_per_second:.1f} events/s, {result.failures} failed attempts, "
        f"{result.workers} workers (payload initialised {result.payload_inits} times)",
        highlight=False,
        markup=False,
    )
    for name, step in result.per_step.items():  # a chain: each step's own figures
        verdict = "validated" if step.get("validated") else "not validated"
        out.print(
            f"  step {name}: {step['events']} events in {step['ranges']} ranges, "
            f"{step['merges']} merges, {step['events_per_second']:.1f} events/s over its "
            f"{step.get('span_seconds', 0.0):.1f} s at work; "
            f"{step['events_done']}/{step['events_total']} done, {verdict}",
            highlight=False,
            markup=False,
        )
    status = result.status
    if status == RunStatus.WALLTIME and result.last_range_started and result.ended:
        tail = result.ended - result.last_range_started
        spare = (result.allocation_end or result.ended) - result.ended
        out.print(
            f"the last range started {tail:.1f} s before the driver left, "
            f"{spare:.1f} s before the allocation's end",
            highlight=False,
        )
    code, to_stderr, line = OUTCOMES[status]
    if status == RunStatus.COMPLETE and result.per_step:
        last = list(result.per_step)[-1]
        line = (
            f"outputs: {{out}}/{last}/merged (each step's in {{out}}/STEP/merged)   "
            "validation: {out}/STEP/validation"
        )
    (err if to_stderr else out).print(
        line.format(out=output, message=result.message), highlight=False, markup=False
    )
    return code


def allocation(walltime: str | None, end: str | None, out: Console) -> float | None:
    """The allocation's end from ``--walltime``/``--end``/Slurm, said aloud; refused if past."""
    from parsl_es.allocation import allocation_end

    when, source = allocation_end(walltime, end)
    if when is not None:
        left = when - time.time()
        if left <= 0:
            raise UserError(f"the allocation end ({source}) is already past")
        out.print(f"allocation ends in {left:.0f} s ({source})", highlight=False)
    return when


class StopOnSignal:
    """SIGINT/SIGTERM at every phase of a run.

    In set-up (reading files, creating the ledger, loading the site) a signal
    stops at once (``parsl_es.interrupts``): nothing is left half-written. Once
    the engine runs (``started``), the first signal stops gracefully (no new
    ranges, in-flight work comes back); a second one, SIGINT or SIGTERM, ends the
    driver and its workers at once, and the ledger resumes.
    """

    def __init__(self, err: Console) -> None:
        self.err = err
        self.event = WakingEvent()  # wakes the engine's wait: it does not poll for a stop
        self.running = False
        self._old: dict[int, Any] = {}

    def started(self) -> None:
        """The engine runs: from now on the first signal is a graceful stop."""
        self.running = True

    def _handle(self, signum: int, _frame: Any) -> None:
        if not self.running or self.event.is_set():
            interrupt(signum)  # raises in the main thread (after a shielded block)
            return
        self.event.set()
        self.err.print(
            f"\n{signal.Signals(signum).name}: finishing what is in flight, starting nothing new "
            "(Ctrl-C or SIGTERM again to end the driver and its workers at once)"
        )

    def __enter__(self) -> StopOnSignal:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def interrupted(exc: Interrupted, running: bool, output: Path | None, err: Console) -> int:
    """The line for a run ended by a signal, and its exit code.

    Ended during set-up: nothing was written (128 + the signal's number, as a
    shell reports it). Ended while running: the campaign is incomplete (3).
    """
    if running and output is not None:
        line = (
            f"{exc.name}: the driver and its workers ended at once; in-flight ranges are "
            f"redone by: es-run resume {output}"
        )
        code = RunStatus.STOPPED
    else:
        line = f"{exc.name} during set-up: stopped before anything was written"
        code = None
    err.print(line, highlight=False, markup=False, soft_wrap=True)
    return OUTCOMES[code][0] if code is not None else 128 + exc.signum
