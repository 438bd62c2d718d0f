"""One step of a campaign as the engine runs it: its cut of the events, its payload.

A single-step campaign is one ``StepPlan`` without a name, whose files sit at
the top of the output directory as they always did. A chain campaign is one
per step, in chain order, each in ``OUTPUT/<step>/``; a step with an ``input``
reads the merged files of an earlier step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parsl_es.ranges import RangePlan


@dataclass(frozen=True)
class StepPlan:
    name: str | None  # None: a single-step campaign
    plan: RangePlan
    payload: tuple[str, dict[str, Any]] = field(compare=False)
    input: str | None = None  # the earlier step whose merged files it reads
    node_types: tuple[str, ...] | None = None  # preference order; None: the site's default
    keep_range_files: bool = True  # False: range files go once their merged file passed

    @property
    def directory(self) -> str:
        """Where the step's ``ranges/``, ``merged/`` and ``validation/`` are, in OUTPUT."""
        return self.name or ""

    @property
    def label(self) -> str:
        """The step's name in logs and tables."""
        return self.name or "simulate"
