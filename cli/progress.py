"""Live progress for a running campaign: a rich bar on a terminal, lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from parsl_es.engine.result import Progress as Snapshot


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def steps_text(s: Snapshot) -> str:
    """A chain's count per step (``gen 200/200, sim 40/200``); empty for one step."""
    return ", ".join(f"{p.step} {p.events_done}/{p.events_total}" for p in s.steps)


def describe(s: Snapshot, per_step_counts: bool = True) -> str:
    """One line of progress; a chain's totals count each event once per step."""
    per_step = steps_text(s) if per_step_counts else ""
    return (
        f"{s.events_done}/{s.events_total} events"
        + (f" [{per_step}]" if per_step else "")
        + f"  {s.events_per_second:6.1f} ev/s  "
        f"ETA {_eta(s.eta_seconds)}  in flight {s.ranges_in_flight}  "
        f"merges {s.merges_done}/{s.merges_total} (validated {s.merges_validated})  "
        f"failures {s.failures}"
        + (f"  fatal {s.fatal}" if s.fatal else "")
        + ("  [stopping]" if s.stopping else "")
    )


class ProgressDisplay:
    """Callable passed to the dispatcher as ``on_progress``.

    On a terminal, a chain gets a bar per step under the campaign's bar.
    """

    def __init__(self, console: Console, title: str, interval: float = 10.0) -> None:
        self.console = console
        self.live = console.is_terminal
        self.interval = interval
        self._last = 0.0
        self._state: tuple = ()
        self._task: Any = None
        self._title = title
        self._step_tasks: dict[str, Any] = {}
        self._bar: Progress | None = None
        if self.live:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[line]}"),
                TimeElapsedColumn(),
                console=console,
                transient=False,
                # redrawn when the engine reports (after results), not 10 times a second:
                # rich's refresh thread would wake the waiting driver for nothing
                auto_refresh=False,
            )

    def __enter__(self) -> ProgressDisplay:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task(self._title, total=None, line="starting workers...")
            self._bar.refresh()
        return self

    def __exit__(self, *_: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, s: Snapshot) -> None:
        if self._bar is not None:
            self._bar.update(
                self._task,
                total=s.events_total,
                completed=s.events_done,
                line=describe(s, per_step_counts=False),  # each step has its bar below
            )
            for step in s.steps:
                task = self._step_tasks.get(str(step.step))
                if task is None:
                    task = self._step_tasks[str(step.step)] = self._bar.add_task(
                        f"  {step.step}", total=None, line=""
                    )
                line = (
                    f"{step.events_done}/{step.events_total} events  in flight "
                    f"{step.ranges_in_flight}  merges {step.merges_done}/{step.merges_total} "
                    f"(validated {step.merges_validated})"
                )
                self._bar.update(
                    task, total=step.events_total, completed=step.events_done, line=line
                )
            self._bar.refresh()
            return
        now = time.time()
        # After the last event, print once per change of merge/validation state.
        state = (s.events_done, s.merges_done, s.merges_validated, s.failures, s.stopping)
        tail = s.events_done == s.events_total and state != self._state
        if now - self._last >= self.interval or tail:
            self._last = now
            self._state = state
            print(f"[{s.elapsed:7.1f}s] {describe(s)}", file=sys.stderr, flush=True)
