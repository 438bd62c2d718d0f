"""The command payload's parameters and the values its simulate template is filled with.

Validation here is what makes a campaign file with a broken template, a bad
environment name or an inconsistent tree fail at load time, not per range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from parsl_es import rootio
from parsl_es.containers import ContainerSpec
from parsl_es.event_service import RangeMessage
from parsl_es.payloads.base import FatalPayloadError, PayloadParams
from parsl_es.payloads.command.templates import (
    MERGE_FIELDS,
    SERVICE_FIELDS,
    SERVICE_ONLY_FIELDS,
    SIMULATE_FIELDS,
    check_template,
    template_fields,
)
from parsl_es.ranges import EventRange


class CommandParams(PayloadParams):
    """Parameters of the command payload: templates, container, environment, checks."""

    simulate: str = Field(
        description="Command line simulating one range, with placeholders such as {output}, "
        "{skip} and {n_events}; split like a shell would, never run by one."
    )
    mode: Literal["per_range", "service"] = Field(
        "per_range",
        description="per_range: run the simulate command once per range; service: start it "
        "once per worker process and hand it ranges over the socket {channel} (the "
        "event-service protocol, see parsl_es.event_service).",
    )
    merge: str | None = Field(
        None,
        description="Command line merging range files listed in {inputs_file} into {output}; "
        "if unset, the events TTrees are concatenated in-process.",
    )
    input: str | None = Field(
        None,
        description="The {input} value, e.g. an EVNT file (use an absolute path), for a "
        "campaign without input of its own; a chain step with an input (or a dataset) gets "
        "{input}, {skip} and {n_events} from each range, and must leave this unset.",
    )
    input_first_event: int = Field(
        0,
        ge=0,
        description="Event number of the input parameter's first event: {skip} is a range's "
        "first event minus this (unused, and must stay 0, when ranges bring their input).",
    )
    container: ContainerSpec | None = Field(None, description="Run the commands in a container.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for the commands."
    )
    job_report: str | None = Field(
        None,
        description="A JSON report the transform writes in its work directory (ATLAS "
        "jobReport.json); success needs its top-level exitCode to be 0.",
    )
    timeout_seconds: float | None = Field(
        None, gt=0, description="Kill a command running longer than this (a retryable failure)."
    )
    init_timeout_seconds: float = Field(
        3600.0,
        gt=0,
        description="mode: service: a transform not asking for events this long after its "
        "start is killed (an initialisation death; three in a row are fatal). Initialisation "
        "outlives a range's own timeout: that range is redone, the transform kept.",
    )
    tree: str = Field("events", min_length=1, description="TTree holding the event numbers.")
    event_number_branch: str = Field(
        "event_number", min_length=1, description="Branch of the event numbers in that tree."
    )

    @field_validator("simulate")
    @classmethod
    def _check_simulate(cls, value: str) -> str:
        return check_template(value, SIMULATE_FIELDS, "simulate")

    @field_validator("merge")
    @classmethod
    def _check_merge(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value, MERGE_FIELDS, "merge")

    @field_validator("env", mode="before")
    @classmethod
    def _numbers_as_text(cls, value: Any) -> Any:
        """YAML reads ``ATHENA_CORE_NUMBER: 1`` as an int; the environment holds text."""
        if isinstance(value, dict):
            return {
                k: str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in value.items()
            }
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not k or "=" in k or "\0" in k]
        if bad:
            raise ValueError(f"invalid environment variable name {bad[0]!r}")
        return value

    @field_validator("job_report")
    @classmethod
    def _report_in_workdir(cls, value: str | None) -> str | None:
        if value is not None and (not value or Path(value).is_absolute()):
            raise ValueError("must be a path relative to the work directory")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CommandParams:
        # {input} without the input parameter is not refused here: a chain step's (or a
        # dataset's) ranges bring their own file; a range with none fails (command_input).
        used = template_fields(self.simulate)
        if self.mode == "service":
            per_range = sorted(used - SERVICE_FIELDS)
            if per_range:
                names = ", ".join(f"{{{n}}}" for n in per_range)
                raise ValueError(
                    f"placeholder {names} of the simulate template is per range: in mode "
                    "service the transform is started once and gets its ranges over {channel}; "
                    f"allowed: {', '.join(f'{{{n}}}' for n in sorted(SERVICE_FIELDS))}"
                )
            if self.job_report is not None:
                raise ValueError("job_report is per run of a transform: not with mode: service")
        elif used & SERVICE_ONLY_FIELDS:
            raise ValueError("placeholder {channel} of the simulate template needs mode: service")
        if self.merge is None and self.tree != rootio.TREE:
            raise ValueError(
                f"tree {self.tree!r} needs a merge template: the built-in merge only "
                f"concatenates {rootio.TREE!r} trees"
            )
        return self


def range_input(params: CommandParams, r: EventRange) -> str | None:
    """The file the range reads: its own ``input`` (a chain step reading an earlier
    step's merged files, or a dataset), else the campaign-level ``input`` parameter.

    Both at once is a contradiction the payload cannot resolve: fatal, naming both.
    """
    if r.input is None:
        return params.input
    if params.input is not None or params.input_first_event:
        given = (
            f"input {params.input}"
            if params.input is not None
            else f"input_first_event {params.input_first_event}"
        )
        raise FatalPayloadError(
            f"range {r.id} reads its events from {r.input} (its step's input), but the "
            f"command payload also has the parameter {given}: a step with an input takes "
            "{input} and {skip} from its ranges; remove input and input_first_event from "
            "the payload's parameters"
        )
    return r.input


def input_skip(params: CommandParams, r: EventRange) -> int:
    """How many events of the input file precede the range.

    A range with its own ``input`` knows it (``r.skip``). Otherwise the payload cannot
    know the campaign's first event, so it counts from ``input_first_event``, the
    first event number of the campaign-level ``input``.
    """
    if r.input is not None:
        range_input(params, r)  # not with the input parameter as well
        if r.skip < 0:
            raise FatalPayloadError(f"range {r.id} has a negative skip {r.skip} in {r.input}")
        return r.skip
    skip = r.first_event - params.input_first_event
    if skip < 0:
        raise FatalPayloadError(
            f"range {r.id} starts at event {r.first_event}, before the input's first event "
            f"{params.input_first_event} (input_first_event)"
        )
    return skip


def command_input(params: CommandParams, r: EventRange) -> str:
    """The ``{input}`` value for range ``r`` ("" if the template does not use it).

    A template using ``{input}`` needs a file: the range's or the parameter's;
    only the range can tell, so a range with neither is fatal here, not at load.
    """
    path = range_input(params, r)  # also refuses a range input with the input parameter
    if "input" not in template_fields(params.simulate):
        return ""
    if path is None:
        raise FatalPayloadError(
            f"the simulate template uses {{input}} but range {r.id} has no input file "
            "(its step has no input) and the payload has no input parameter"
        )
    return path


def simulate_values(params: CommandParams, r: EventRange, output: Path, workdir: Path) -> dict:
    """The simulate placeholders' values for one range."""
    return {
        "input": command_input(params, r),
        "output": str(output),
        "skip": input_skip(params, r),
        "first_event": r.first_event,
        "last_event": r.last_event,
        "n_events": r.n_events,
        "seed": r.seed,
        "campaign_seed": r.campaign_seed,
        "range_id": r.id,
        "workdir": str(workdir),
    }


def service_values(
    params: CommandParams, channel: str, workdir: Path, campaign_seed: int, input_path: str = ""
) -> dict:
    """The simulate placeholders' values for a ``mode: service`` transform (no range's).

    ``input_path``: the ``{input}`` of the range it is started for (``command_input``);
    a transform is only handed ranges with that same ``{input}`` (see ``serving``).
    """
    return {
        "input": input_path,
        "workdir": str(workdir),
        "channel": channel,
        "campaign_seed": campaign_seed,
    }


def range_message(params: CommandParams, r: EventRange) -> RangeMessage:
    """One range as a service-mode transform is handed it.

    With an input file (the range's own, or the campaign-level ``input``) the range's
    events are read from it: ``PFN`` is that file, and ``startEvent`` and ``lastEvent``
    are 1-based, inclusive positions in it (as PanDA counts), ``skip + 1`` and
    ``skip + n_events``, so they agree with ``{skip}`` and ``{n_events}`` of
    ``mode: per_range``.
    """
    path = range_input(params, r)
    if path is None:
        return RangeMessage(r.id, r.first_event, r.last_event, r.seed)
    skip = input_skip(params, r)
    return RangeMessage(
        r.id,
        r.first_event,
        r.last_event,
        r.seed,
        pfn=path,
        lfn=Path(path).name,
        start_event=skip + 1,
        last_event_in_file=skip + r.n_events,
    )
