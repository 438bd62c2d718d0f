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
        None, description="The {input} value, e.g. an EVNT file (use an absolute path)."
    )
    input_first_event: int = Field(
        0,
        ge=0,
        description="Event number of the input's first event: {skip} is a range's first event "
        "minus this.",
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
        if "input" in template_fields(self.simulate) and self.input is None:
            raise ValueError("the simulate template uses {input} but no input is set")
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


def input_skip(params: CommandParams, r: EventRange) -> int:
    """How many input events precede the range: the payload cannot know the campaign's
    first event, so it counts from ``input_first_event``, the input's first event number."""
    skip = r.first_event - params.input_first_event
    if skip < 0:
        raise FatalPayloadError(
            f"range {r.id} starts at event {r.first_event}, before the input's first event "
            f"{params.input_first_event} (input_first_event)"
        )
    return skip


def simulate_values(params: CommandParams, r: EventRange, output: Path, workdir: Path) -> dict:
    """The simulate placeholders' values for one range."""
    return {
        "input": params.input if params.input is not None else "",
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


def service_values(params: CommandParams, channel: str, workdir: Path, campaign_seed: int) -> dict:
    """The simulate placeholders' values for a ``mode: service`` transform (no range's)."""
    return {
        "input": params.input if params.input is not None else "",
        "workdir": str(workdir),
        "channel": channel,
        "campaign_seed": campaign_seed,
    }


def range_message(params: CommandParams, r: EventRange) -> RangeMessage:
    """One range as a service-mode transform is handed it.

    With an input file the range's events are read from it: ``startEvent`` and
    ``lastEvent`` are 1-based positions in that file (as PanDA counts), the first
    being ``input_skip + 1``, so they agree with ``{skip}`` of ``mode: per_range``.
    """
    if params.input is None:
        return RangeMessage(r.id, r.first_event, r.last_event, r.seed)
    skip = input_skip(params, r)
    return RangeMessage(
        r.id,
        r.first_event,
        r.last_event,
        r.seed,
        pfn=params.input,
        lfn=Path(params.input).name,
        start_event=skip + 1,
        last_event_in_file=skip + r.n_events,
    )
