"""Chain campaigns: generation -> simulation -> merge -> reconstruction -> merge as one.

A campaign file with a ``chain`` holds an ordered mapping from step name to a
step: its ``payload``, its ``input`` (an earlier step, whose merged files it
reads; the first step makes its own events), its own cut into ranges and merge
groups, and the node types it prefers. ``name``, ``events``, ``first_event``,
``seed``, ``attempts`` and ``range_timeout`` apply to every step. Every check
that needs the whole chain (inputs that name earlier steps, formats that fit,
ranges that stay inside one input file) is made here, before anything is
written, and names the file, the step and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parsl_es.errors import UserError, allowed, shown
from parsl_es.payloads import load_payload_class, make_payload
from parsl_es.ranges import RangePlan, StepInput, derive_seed
from parsl_es.specs import (
    MAX_EVENT_NUMBER,
    PayloadSpec,
    RangeTimeoutSpec,
    StepsSpec,
    check_payload,
    merge_groups_problem,
)
from parsl_es.stepplan import StepPlan
from parsl_es.yamlfile import line_of, validation_error

STEP_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_CHAIN_STEPS = 16
#: A payload whose ``reads`` is this takes whatever its input step wrote (``command``).
READS_ANYTHING = "*"


class DatasetSpec(BaseModel):
    """Existing files a step runs over: ``files`` (paths or globs) of one ``format``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    files: list[str] = Field(min_length=1, max_length=10_000)
    format: Literal["hepmc3"]


class ChainStepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    payload: PayloadSpec
    input: str | DatasetSpec | None = None
    events_per_range: int = Field(gt=0, le=1_000_000)
    events_per_merge: int = Field(gt=0)
    node_types: list[str] | None = Field(None, min_length=1, max_length=64)
    keep_range_files: bool = True

    @field_validator("node_types", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("events_per_merge")
    @classmethod
    def _a_multiple(cls, value: int, info: Any) -> int:
        problem = merge_groups_problem(None, info.data.get("events_per_range"), value)
        if problem:
            raise ValueError(problem)
        return value


class ChainSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    events: int | None = Field(None, gt=0, le=10**12)
    first_event: int = Field(0, ge=0)
    seed: int = Field(ge=0, lt=2**63)
    attempts: int = Field(3, ge=1, le=100)
    steps: StepsSpec = StepsSpec()
    range_timeout: RangeTimeoutSpec = RangeTimeoutSpec()
    output: str | None = None
    chain: dict[str, ChainStepSpec] = Field(min_length=1, max_length=MAX_CHAIN_STEPS)

    @field_validator("output")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or "\0" in value or len(value) > 4096):
            raise ValueError(
                "must be a directory path (not empty, no NUL, at most 4096 characters)"
            )
        return value

    @property
    def step_names(self) -> list[str]:
        return list(self.chain)

    def step_plans(self) -> tuple[StepPlan, ...]:
        """One plan per step, in chain order (the chain was checked when it was read)."""
        assert self.events is not None
        plans: dict[str, StepPlan] = {}
        for i, (name, step) in enumerate(self.chain.items()):
            source = None
            if isinstance(step.input, str):
                before = plans[step.input]
                suffix = make_payload(*before.payload).suffix
                source = StepInput(step.input, before.plan.events_per_merge, suffix)
            plan = RangePlan(
                campaign=self.name,
                events=self.events,
                first_event=self.first_event,
                events_per_range=step.events_per_range,
                events_per_merge=step.events_per_merge,
                # the first step draws from the campaign seed itself, as a single-step
                # campaign does; each later step from a stream of its own
                seed=self.seed if i == 0 else derive_seed(self.seed, "step", name),
                input=source,
            )
            plans[name] = StepPlan(
                name=name,
                plan=plan,
                payload=(step.payload.name, step.payload.params),
                input=step.input if isinstance(step.input, str) else None,
                node_types=tuple(step.node_types) if step.node_types else None,
                keep_range_files=step.keep_range_files,
            )
        return tuple(plans.values())

    def to_json(self) -> str:
        """Keys in the order given: the chain's order is its meaning."""
        return json.dumps(self.model_dump(mode="json", by_alias=True))


def chain_from_dict(data: dict[str, Any], source: str | Path, lines: dict) -> ChainSpec:
    """Validate a chain campaign: each field, then the chain as a whole."""
    try:
        spec = ChainSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, ChainSpec, source, lines) from None
    _ChainCheck(spec, source, lines).run()
    return spec


class _ChainCheck:
    """The checks that need the whole chain; the first problem is raised."""

    def __init__(self, spec: ChainSpec, source: str | Path, lines: dict) -> None:
        self.spec = spec
        self.source = source
        self.lines = lines

    def fail(self, loc: tuple, message: str) -> UserError:
        field = ".".join(str(p) for p in loc)
        return UserError(message, file=self.source, field=field, line=line_of(self.lines, loc))

    def run(self) -> None:
        spec = self.spec
        if spec.steps.simulate is not None:
            raise self.fail(("steps", "simulate"), "a chain gives each step its node_types instead")
        names = spec.step_names
        for name in names:
            if not STEP_NAME.match(name):
                raise self.fail(
                    ("chain", name),
                    f"step name {shown(name)} must be lower-case letters, digits and '_', "
                    "starting with a letter, at most 32 characters",
                )
        for name, step in spec.chain.items():
            check_payload(step.payload, self.source, self.lines, at=("chain", name, "payload"))
        self._events()
        for i, (name, step) in enumerate(spec.chain.items()):
            self._input(i, name, step)

    def _events(self) -> None:
        spec = self.spec
        first = next(iter(spec.chain.values()))
        if isinstance(first.input, DatasetSpec):
            raise self.fail(
                ("chain", next(iter(spec.chain)), "input"),
                "input datasets are not supported in this version",
            )
        if spec.events is None:
            raise self.fail(("events",), "required key is missing (the first step makes events)")
        last = spec.first_event + spec.events - 1
        if last > MAX_EVENT_NUMBER:
            raise self.fail(
                ("first_event",),
                f"the last event number (first_event + events - 1 = {last}) must be at most "
                f"{MAX_EVENT_NUMBER} (2**63 - 1, a signed 64-bit integer)",
            )
        for name, step in spec.chain.items():
            problem = merge_groups_problem(
                spec.events, step.events_per_range, step.events_per_merge
            )
            if problem:
                raise self.fail(("chain", name, "events_per_merge"), problem)

    def _input(self, position: int, name: str, step: ChainStepSpec) -> None:
        names = self.spec.step_names
        reads = load_payload_class(step.payload.name).reads
        at = ("chain", name, "input")
        if step.input is None:
            if position > 0:
                raise self.fail(
                    at,
                    f"required: only the first step makes its own events; name an earlier "
                    f"step ({allowed(names[:position])})",
                )
            if reads not in (None, READS_ANYTHING):
                raise self.fail(
                    ("chain", name, "payload", "name"),
                    f"payload '{step.payload.name}' reads {reads} files: the first step "
                    "needs a payload that makes events, or an input",
                )
            return
        if isinstance(step.input, DatasetSpec):
            raise self.fail(at, "input datasets are not supported in this version")
        wanted = step.input
        if wanted == name:
            raise self.fail(at, f"step '{name}' names itself as its input (a cycle)")
        if wanted not in names:
            raise self.fail(at, f"no step {shown(wanted)} in the chain; steps: {allowed(names)}")
        if names.index(wanted) > position:
            raise self.fail(
                at,
                f"'{wanted}' comes later in the chain: a step reads only what an earlier "
                "step wrote (steps run in the order they are listed; a cycle cannot)",
            )
        before = self.spec.chain[wanted]
        writes = load_payload_class(before.payload.name).writes
        if reads is None:
            raise self.fail(
                ("chain", name, "payload", "name"),
                f"payload '{step.payload.name}' makes its own events and reads no input; "
                f"remove the step's input or use a payload that reads {writes or 'files'}",
            )
        if reads != READS_ANYTHING and writes is not None and reads != writes:
            raise self.fail(
                at,
                f"step '{name}' (payload '{step.payload.name}') reads {reads} files, but "
                f"step '{wanted}' (payload '{before.payload.name}') writes {writes}",
            )
        if before.events_per_merge % step.events_per_range:
            raise self.fail(
                ("chain", name, "events_per_range"),
                f"must divide the events_per_merge ({before.events_per_merge}) of its input "
                f"step '{wanted}': a range never spans two input files",
            )
