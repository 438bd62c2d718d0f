"""The steps of a campaign, declared as data, and the events that pass between them.

A step says which worker function runs it, what one task of it covers (a
bundle of event ranges, a merge group, a merged file, the whole campaign),
which placement of the site gives its node types, and which step's results
start it. The dispatcher builds one controller per step from these
declarations and wires each to the steps after it; its loop knows no step by
name, so a new step kind (generation, reconstruction) is a new declaration
and, where its unit of work is new, a new controller, never a change to the
loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from parsl_es.backends.base import Priority
from parsl_es.records import MergedFile


class Unit(StrEnum):
    """What one task of a step covers."""

    RANGES = "ranges"  # a bundle of event ranges
    MERGE_GROUP = "merge_group"  # one merge group's range files
    MERGED_FILE = "merged_file"  # one merged file
    CAMPAIGN = "campaign"  # every merged file of the campaign


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    name: str
    function: str  # the worker function in ``parsl_es.apps``
    unit: Unit
    placement: str  # "simulate", "merge" or "validate": which node types run it
    after: str | None = None  # the step whose results start this one
    required: bool = True  # without it the campaign is not complete
    priority: Priority = Priority.IN_TURN  # where its tasks wait in a node type's queue


#: Today's campaign: simulate ranges, merge each complete group on the fly,
#: validate each merged file, then prove the whole campaign (and plot it).
SIMULATION_CAMPAIGN: tuple[StepSpec, ...] = (
    StepSpec(name="simulate", function="simulate_ranges", unit=Unit.RANGES, placement="simulate"),
    StepSpec(
        name="merge",
        function="merge_group",
        unit=Unit.MERGE_GROUP,
        placement="merge",
        after="simulate",
        priority=Priority.FIRST,
    ),
    StepSpec(
        name="validate",
        function="validate_merge",
        unit=Unit.MERGED_FILE,
        placement="validate",
        after="merge",
        priority=Priority.FIRST,
    ),
    StepSpec(
        name="validate_campaign",
        function="validate_campaign",
        unit=Unit.CAMPAIGN,
        placement="validate",
        after="validate",
    ),
    StepSpec(
        name="plot_campaign",
        function="plot_campaign",
        unit=Unit.CAMPAIGN,
        placement="validate",
        after="validate",
        required=False,
    ),
)


@dataclass(frozen=True)
class Placement:
    """The node types that run each placement, resolved against the site."""

    simulate: list[str]
    merge: str
    validate: str

    def node_types(self, placement: str) -> list[str]:
        value: Any = getattr(self, placement)
        return list(value) if isinstance(value, list) else [value]


# --- events from a step to the steps after it -------------------------------------------


@dataclass(frozen=True)
class RangesDone:
    """Ranges recorded done: a merge group may now be complete."""

    indices: Sequence[int]


@dataclass(frozen=True)
class MergeRecorded:
    """A merged file, renamed into place and recorded in the ledger."""

    merged: MergedFile


@dataclass(frozen=True)
class MergeValidated:
    """A merged file passed its validation (the future the campaign proof waits on)."""

    group: int
    future: Future
