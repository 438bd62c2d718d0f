"""The campaign file: what to simulate, how to cut it, where steps run.

The keys are a public format (``name``, ``events``, ``first_event``,
``events_per_range``, ``events_per_merge``, ``seed``, ``payload``, ``attempts``,
``steps``, ``range_timeout``, ``output``); unknown keys are errors, so a typo never silently
becomes a default, and numbers are checked strictly: ``true`` or ``2.5`` is no count.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from parsl_es.errors import FieldError, UserError, allowed, did_you_mean, shown
from parsl_es.payloads import available_payloads, load_payload_class
from parsl_es.ranges import RangePlan
from parsl_es.yamlfile import exists, parse_mapping, read_text, validation_error

STEPS = ("simulate", "merge", "validate")
# Event numbers are stored as SQLite integers: signed 64-bit.
MAX_EVENT_NUMBER = 2**63 - 1
#: Merge groups are rows of the ledger made when the campaign is created, and the
#: engine, the notebook and validation each hold a little per group: a bound keeps
#: creating any accepted campaign under a second and the driver's memory small.
#: Event ranges need no bound: their rows are written when they are first started.
MAX_MERGE_GROUPS = 100_000


class StepsSpec(BaseModel):
    """Which node type of the site runs each step; unset steps use the site's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    simulate: list[str] | None = None
    merge: str | None = None
    validate_: str | None = Field(None, alias="validate")

    @field_validator("simulate", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

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


class CampaignSpec(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, strict=True, allow_inf_nan=False
    )

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    events: int = Field(gt=0, le=10**12)
    first_event: int = Field(0, ge=0)
    events_per_range: int = Field(gt=0, le=1_000_000)
    events_per_merge: int = Field(gt=0)
    seed: int = Field(ge=0, lt=2**63)
    payload: PayloadSpec
    attempts: int = Field(3, ge=1, le=100)
    steps: StepsSpec = StepsSpec()
    range_timeout: RangeTimeoutSpec = RangeTimeoutSpec()
    output: str | None = None

    @field_validator("first_event")
    @classmethod
    def _last_event_fits(cls, value: int, info: ValidationInfo) -> int:
        events = info.data.get("events", 1)
        last = value + events - 1
        if last > MAX_EVENT_NUMBER:
            raise ValueError(
                f"the last event number (first_event + events - 1 = {last}) must be at most "
                f"{MAX_EVENT_NUMBER} (2**63 - 1, a signed 64-bit integer)"
            )
        return value

    @field_validator("events_per_merge")
    @classmethod
    def _merge_groups_fit(cls, value: int, info: ValidationInfo) -> int:
        per_range = info.data.get("events_per_range")
        if per_range and value % per_range:
            raise ValueError(
                f"events_per_merge ({value}) must be a multiple of events_per_range ({per_range})"
            )
        events = info.data.get("events")
        if events and -(-events // value) > MAX_MERGE_GROUPS:
            least = -(-events // MAX_MERGE_GROUPS)
            if per_range:
                least = -(-least // per_range) * per_range
            raise ValueError(
                f"{events} events in merge groups of {value} make {-(-events // value)} merged "
                f"files, more than {MAX_MERGE_GROUPS}; use events_per_merge >= {least}"
            )
        return value

    @field_validator("output")
    @classmethod
    def _a_path(cls, value: str | None) -> str | None:
        if value is not None and (not value or "\0" in value or len(value) > 4096):
            raise ValueError(
                "must be a directory path (not empty, no NUL, at most 4096 characters)"
            )
        return value

    @property
    def plan(self) -> RangePlan:
        return RangePlan(
            campaign=self.name,
            events=self.events,
            first_event=self.first_event,
            events_per_range=self.events_per_range,
            events_per_merge=self.events_per_merge,
            seed=self.seed,
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)


def _check_payload(spec: CampaignSpec, source: str | Path, lines: dict[tuple, int]) -> None:
    """Validate the payload's own parameters against its registered Params model."""
    names = available_payloads()
    name = spec.payload.name
    if name not in names:
        line = lines.get(("payload", "name"))
        raise UserError(
            f"unknown payload {shown(name)}{did_you_mean(name, names)}; allowed: {allowed(names)}",
            file=source,
            field="payload.name",
            line=line,
        )
    params_model = load_payload_class(name).Params
    try:
        params_model(**spec.payload.params)
    except ValidationError as exc:
        raise validation_error(exc, params_model, source, lines, prefix=("payload",)) from None


def campaign_from_dict(
    data: dict[str, Any], source: str | Path = "<campaign>", lines: dict | None = None
) -> CampaignSpec:
    """Validate a campaign given as a mapping (from a file, a notebook or JSON)."""
    lines = lines or {}
    if not isinstance(data, dict):
        raise UserError("a campaign must be a mapping of keys to values", file=source)
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, CampaignSpec, source, lines) from None
    _check_payload(spec, source, lines)
    return spec


def load_campaign(path: str | Path) -> CampaignSpec:
    """Load a campaign file, or a campaign shipped in ``workflows/`` by name."""
    file = resolve_campaign_path(path)
    text = read_text(file, "campaign file")
    data, lines = parse_mapping(text, file, "campaign file")
    return campaign_from_dict(data, file, lines)


def shipped_campaigns() -> dict[str, Path]:
    """Example campaigns that ship with parsl-es, by name."""
    root = resources.files("parsl_es.workflows")
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in root.iterdir()
        if entry.name.endswith((".yaml", ".yml"))
    }


def resolve_campaign_path(path: str | Path) -> Path:
    file = Path(path)
    if file.suffix in (".yaml", ".yml") or "/" in str(path) or exists(file):
        return file
    shipped = shipped_campaigns()
    if str(path) in shipped:
        return shipped[str(path)]
    raise UserError(
        f"no campaign file {shown(path)} and no shipped campaign of that name"
        f"{did_you_mean(str(path), shipped)}; shipped: {allowed(shipped)}"
    )
