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
)

from parsl_es.chain import ChainSpec, chain_from_dict
from parsl_es.errors import UserError, allowed, did_you_mean, shown
from parsl_es.ranges import RangePlan
from parsl_es.specs import (
    MAX_EVENT_NUMBER,
    MAX_MERGE_GROUPS,
    STEPS,
    OutputPath,
    PayloadSpec,
    RangeTimeoutSpec,
    StepsSpec,
    check_payload,
    merge_groups_problem,
)
from parsl_es.stepplan import StepPlan
from parsl_es.yamlfile import exists, parse_mapping, read_text, validation_error

__all__ = [
    "MAX_EVENT_NUMBER",
    "MAX_MERGE_GROUPS",
    "STEPS",
    "CampaignSpec",
    "PayloadSpec",
    "RangeTimeoutSpec",
    "StepsSpec",
    "campaign_from_dict",
    "load_campaign",
]


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
    output: OutputPath = None

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
        problem = merge_groups_problem(
            info.data.get("events"), info.data.get("events_per_range"), value
        )
        if problem:
            raise ValueError(problem)
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

    def step_plans(self) -> tuple[StepPlan, ...]:
        """The one unnamed step of a single-step campaign."""
        payload = (self.payload.name, self.payload.params)
        return (StepPlan(name=None, plan=self.plan, payload=payload),)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)


def campaign_from_dict(
    data: dict[str, Any], source: str | Path = "<campaign>", lines: dict | None = None
) -> CampaignSpec | ChainSpec:
    """Validate a campaign given as a mapping (from a file, a notebook or JSON).

    A mapping with a ``chain`` is a chain campaign (``parsl_es.chain``).
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise UserError("a campaign must be a mapping of keys to values", file=source)
    if "chain" in data:
        return chain_from_dict(data, source, lines)
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, CampaignSpec, source, lines) from None
    check_payload(spec.payload, source, lines)
    return spec


def load_campaign(path: str | Path) -> CampaignSpec | ChainSpec:
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
