"""The parts of a campaign file that a single-step campaign and a chain share.

A payload (``name`` and its parameters), where steps run, when a range is
presumed hung, and the bounds every campaign keeps; a chain step carries the
same payload block as a single-step campaign.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from parsl_es.errors import FieldError, UserError, allowed, did_you_mean, shown
from parsl_es.payloads import available_payloads, load_payload_class
from parsl_es.yamlfile import validation_error

STEPS = ("simulate", "merge", "validate")
# Event numbers are stored as SQLite integers: signed 64-bit.
MAX_EVENT_NUMBER = 2**63 - 1
#: Merge groups are rows of the ledger made when the campaign is created, and the
#: engine, the notebook and validation each hold a little per group: a bound keeps
#: creating any accepted campaign under a second and the driver's memory small.
#: Event ranges need no bound: their rows are written when they are first started.
MAX_MERGE_GROUPS = 100_000


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _output_path(value: str | None) -> str | None:
    if value is not None and (not value or "\0" in value or len(value) > 4096):
        raise ValueError("must be a directory path (not empty, no NUL, at most 4096 characters)")
    return value


#: A list of node type names; one name alone stands for a list of one.
NodeTypeNames = Annotated[list[str] | None, BeforeValidator(_one_or_many)]
#: The ``output`` key: a directory path.
OutputPath = Annotated[str | None, AfterValidator(_output_path)]


def merge_groups_problem(events: int | None, per_range: int | None, per_merge: int) -> str | None:
    """Why ``per_merge`` does not fit (not a multiple of ``per_range``, too many groups)."""
    if per_range and per_merge % per_range:
        return (
            f"events_per_merge ({per_merge}) must be a multiple of events_per_range ({per_range})"
        )
    if events and -(-events // per_merge) > MAX_MERGE_GROUPS:
        least = -(-events // MAX_MERGE_GROUPS)
        if per_range:
            least = -(-least // per_range) * per_range
        return (
            f"{events} events in merge groups of {per_merge} make {-(-events // per_merge)} "
            f"merged files, more than {MAX_MERGE_GROUPS}; use events_per_merge >= {least}"
        )
    return None


class StepsSpec(BaseModel):
    """Which node type of the site runs each step; unset steps use the site's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    simulate: NodeTypeNames = None
    merge: str | None = None
    validate_: str | None = Field(None, alias="validate")

    @field_validator("simulate")
    @classmethod
    def _not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("needs at least one node type")
        return value


class PayloadSpec(BaseModel):
    """``name`` picks the payload; every other key is one of its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class RangeTimeoutSpec(BaseModel):
    """When a range is presumed hung and redone elsewhere.

    ``factor`` times the 99th percentile of recent range durations on the node
    type, kept between ``floor_seconds`` and ``ceiling_seconds`` (the ceiling
    until a few ranges have finished); ``slack_seconds`` more before a bundle or
    a merge is given up on or its worker pool is presumed wedged.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    factor: float = Field(5.0, ge=1.5)
    floor_seconds: float = Field(60.0, gt=0)
    ceiling_seconds: float = Field(3600.0, gt=0)
    #: Added to every bundle's allowance and to a merge's: a busy machine's delays.
    slack_seconds: float = Field(10.0, ge=0, le=86400)

    @model_validator(mode="after")
    def _ordered(self) -> RangeTimeoutSpec:
        if self.ceiling_seconds < self.floor_seconds:
            raise FieldError(
                ("ceiling_seconds",),
                f"ceiling_seconds ({self.ceiling_seconds:g}) is below floor_seconds "
                f"({self.floor_seconds:g})",
            )
        return self


def check_payload(
    payload: PayloadSpec, source: str | Path, lines: dict[tuple, int], at: tuple = ("payload",)
) -> None:
    """Validate the payload's own parameters against its registered Params model."""
    names = available_payloads()
    name = payload.name
    if name not in names:
        raise UserError(
            f"unknown payload {shown(name)}{did_you_mean(name, names)}; allowed: {allowed(names)}",
            file=source,
            field=".".join((*at, "name")),
            line=lines.get((*at, "name")),
        )
    params_model = load_payload_class(name).Params
    try:
        params_model(**payload.params)
    except ValidationError as exc:
        raise validation_error(exc, params_model, source, lines, prefix=at) from None
