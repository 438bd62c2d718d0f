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

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from parsl_es.dataset_plan import DatasetPlan, InputFile
from parsl_es.errors import UserError, allowed, shown
from parsl_es.payloads import load_payload_class, make_payload
from parsl_es.ranges import RangePlan, StepInput, derive_seed, merged_name
from parsl_es.specs import (
    MAX_EVENT_NUMBER,
    MAX_MERGE_GROUPS,
    NodeTypeNames,
    OutputPath,
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
    node_types: NodeTypeNames = Field(None, min_length=1, max_length=64)
    keep_range_files: bool = True

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
    output: OutputPath = None
    chain: dict[str, ChainStepSpec] = Field(min_length=1, max_length=MAX_CHAIN_STEPS)
    #: The input dataset's files as counted at submit (or as the ledger recorded them).
    _dataset: tuple[InputFile, ...] = PrivateAttr(default=())

    @property
    def dataset(self) -> tuple[InputFile, ...]:
        return self._dataset

    def with_dataset(self, files: tuple[InputFile, ...]) -> ChainSpec:
        """This chain over its counted dataset (a chain that starts from one)."""
        spec = self.model_copy()
        spec._dataset = tuple(files)
        return spec

    @property
    def dataset_spec(self) -> DatasetSpec | None:
        first = next(iter(self.chain.values()))
        return first.input if isinstance(first.input, DatasetSpec) else None

    @property
    def step_names(self) -> list[str]:
        return list(self.chain)

    def step_plans(self) -> tuple[StepPlan, ...]:
        """One plan per step, in chain order (the chain was checked when it was read).

        A chain that makes its events cuts them by event number at every step; one
        that starts from a dataset cuts by position in the dataset's files, and each
        later step by position in the merged files of the step it reads.
        """
        plans: dict[str, StepPlan] = {}
        for i, (name, step) in enumerate(self.chain.items()):
            # the first step draws from the campaign seed itself, as a single-step
            # campaign does; each later step from a stream of its own
            seed = self.seed if i == 0 else derive_seed(self.seed, "step", name)
            before = plans[step.input] if isinstance(step.input, str) else None
            plans[name] = StepPlan(
                name=name,
                plan=self._plan(step, seed, before),
                payload=(step.payload.name, step.payload.params),
                input=step.input if isinstance(step.input, str) else None,
                node_types=tuple(step.node_types) if step.node_types else None,
                keep_range_files=step.keep_range_files,
            )
        return tuple(plans.values())

    def _plan(
        self, step: ChainStepSpec, seed: int, before: StepPlan | None
    ) -> RangePlan | DatasetPlan:
        cut = {
            "campaign": self.name,
            "events_per_range": step.events_per_range,
            "events_per_merge": step.events_per_merge,
            "seed": seed,
        }
        if isinstance(step.input, DatasetSpec):
            if not self._dataset:
                raise ValueError("the chain's dataset has not been counted")
            return DatasetPlan(files=self._dataset, format=step.input.format, **cut)
        source = None
        if before is not None:
            suffix = make_payload(*before.payload).suffix
            source = StepInput(before.name or "", before.plan.events_per_merge, suffix)
            if isinstance(before.plan, DatasetPlan):  # its merged files are this one's input
                return DatasetPlan(
                    files=_merged_files(before.plan, source),
                    input=source,
                    origin=before.plan.dataset,
                    format=before.plan.format,
                    **cut,
                )
        assert self.events is not None
        return RangePlan(events=self.events, first_event=self.first_event, input=source, **cut)

    def to_json(self) -> str:
        """Keys in the order given: the chain's order is its meaning."""
        return json.dumps(self.model_dump(mode="json", by_alias=True))


def _merged_files(plan: DatasetPlan, source: StepInput) -> tuple[InputFile, ...]:
    """The merged files of a step over a dataset, one per merge group, as a later step
    reads them (made by the chain, so not counted: no size or checksum)."""
    return tuple(
        InputFile(
            path=f"../{source.step}/merged/{merged_name(plan.campaign, g, source.suffix)}",
            size=0,
            checksum="",
            n_events=plan.group(g).n_events,
        )
        for g in range(plan.n_merges)
    )


def chain_from_dict(data: dict[str, Any], source: str | Path, lines: dict) -> ChainSpec:
    """Validate a chain campaign: each field, then the chain as a whole.

    A chain that starts from a dataset has its files counted here, once (every
    file is read: its checksum and its event numbers).
    """
    try:
        spec = ChainSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, ChainSpec, source, lines) from None
    _ChainCheck(spec, source, lines).run()
    if spec.dataset_spec is not None:
        spec = spec.with_dataset(count_dataset(spec, source, lines))
    return spec


def count_dataset(spec: ChainSpec, source: str | Path, lines: dict) -> tuple[InputFile, ...]:
    """Resolve and count the chain's input dataset (files relative to the campaign file)."""
    from parsl_es import datasets

    dataset = spec.dataset_spec
    assert dataset is not None
    first = spec.step_names[0]
    loc = ("chain", first, "input", "files")
    where = {"source": source, "field": ".".join(loc), "line": line_of(lines, loc)}
    base = Path(source).parent if Path(str(source)).is_file() else Path.cwd()
    paths = datasets.resolve(dataset.files, base, **where)
    read = datasets.reader_for(dataset.format, **where)
    files = datasets.count(paths, read, fmt=dataset.format, **where)
    step = spec.chain[first]
    plan = DatasetPlan(spec.name, files, step.events_per_range, step.events_per_merge, 0)
    if plan.n_merges > MAX_MERGE_GROUPS:
        raise UserError(
            f"the dataset's {len(files)} files make {plan.n_merges} merge groups, more than "
            f"{MAX_MERGE_GROUPS}",
            file=source,
            field=f"chain.{first}.events_per_merge",
            line=line_of(lines, ("chain", first, "events_per_merge")),
        )
    return files


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
        if spec.dataset_spec is not None:
            for key in ("events", "first_event"):
                if key in spec.model_fields_set:
                    raise self.fail(
                        (key,),
                        "a chain that starts from a dataset takes its events and their "
                        "numbers from the dataset's files: remove it",
                    )
            return
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
            if position > 0:
                raise self.fail(
                    at,
                    "only the chain's first step may read a dataset; later steps read "
                    f"an earlier step ({allowed(names[:position])})",
                )
            if reads not in (step.input.format, READS_ANYTHING):
                raise self.fail(
                    ("chain", name, "payload", "name"),
                    f"payload '{step.payload.name}' "
                    + (f"reads {reads} files" if reads else "makes its own events")
                    + f", but the dataset is {step.input.format}",
                )
            return
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
        if self.spec.dataset_spec is None and before.events_per_merge % step.events_per_range:
            raise self.fail(
                ("chain", name, "events_per_range"),
                f"must divide the events_per_merge ({before.events_per_merge}) of its input "
                f"step '{wanted}': a range never spans two input files",
            )
