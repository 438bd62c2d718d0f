"""What every step controller offers the dispatcher's loop."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from parsl_es.engine.context import EngineContext
from parsl_es.engine.steps import StepSpec
from parsl_es.ledger import ResumeState


class Step:
    """One declared step at run time: submits its work and acts on its completions.

    The loop calls ``load`` once, then ``check``, ``top_up`` and ``handle`` over
    and over; ``busy`` says whether anything of the step is in flight. Steps tell
    the steps after them what happened through ``emit`` -> ``accept``.
    """

    def __init__(self, spec: StepSpec, ctx: EngineContext, node_types: list[str]) -> None:
        self.spec = spec
        self.ctx = ctx
        self.node_types = node_types
        self.upstream: list[Step] = []
        self.downstream: list[Step] = []

    @property
    def name(self) -> str:
        """Unique in the run: a chain step's controllers carry its name (``simul.merge``)."""
        return f"{self.ctx.step}.{self.spec.name}" if self.ctx.step else self.spec.name

    def load(self, state: ResumeState) -> None:
        """Rebuild what this step needs from the ledger (a fresh start or a resume)."""

    def top_up(self, now: float) -> None:
        """Submit whatever may start now."""

    def check(self, now: float) -> None:
        """Look for work that has run too long."""

    def next_deadline(self, now: float) -> float:
        """When ``check`` may next have something to decide (inf: never, as here).

        The engine sleeps until a completion, a stop or the earliest step's deadline:
        a step that checks its work must say when.
        """
        return float("inf")

    def unfinished_top_up(self) -> bool:
        """The last ``top_up`` stopped short of what may start (a bound per loop pass):
        the loop must not sleep before the next."""
        return False

    def connecting(self) -> bool:
        """Whether work waits for workers still connecting (the loop then counts them
        again every ``WORKER_POLL_SECONDS``: nothing announces a new worker)."""
        return False

    def accept(self, event: Any) -> None:
        """An event from an upstream step."""

    def handle(self, done: list[tuple[Any, Future]], now: float) -> None:
        """Act on this step's finished futures (``(key, future)``, in finishing order)."""

    def redo(self, indices: list[int]) -> None:
        """Units of work a downstream step found damaged: do them again."""

    def busy(self) -> bool:
        return False

    def held_back(self) -> bool:
        """Whether work was left for the next allocation (it would not finish in this one)."""
        return False

    def in_flight_counts(self) -> tuple[int, int]:
        """Units of work (event ranges) and tasks in flight, for progress displays."""
        return 0, 0

    def emit(self, event: Any) -> None:
        for step in self.downstream:
            step.accept(event)
