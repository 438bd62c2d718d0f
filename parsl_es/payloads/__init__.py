"""Payload registry: payloads are found by name, never imported by the engine.

Built-in payloads and third-party ones register under the ``parsl_es.payloads``
entry-point group (``name = "package.module:Class"``), so an experiment can ship
its own payload as a separate package.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from parsl_es.payloads.base import (
    FatalPayloadError,
    Payload,
    PayloadError,
    PayloadParams,
    TransformLost,
)

__all__ = [
    "FatalPayloadError",
    "Payload",
    "PayloadError",
    "PayloadParams",
    "TransformLost",
    "available_payloads",
    "load_payload_class",
    "make_payload",
]

ENTRY_POINT_GROUP = "parsl_es.payloads"

# Used when the package metadata is not installed (running from a source tree).
_BUILTIN = {
    "command": "parsl_es.payloads.command:CommandPayload",
    "emulate": "parsl_es.payloads.emulate:EmulatePayload",
    "evgen": "parsl_es.payloads.mc.evgen:EvgenPayload",
    "physics": "parsl_es.payloads.physics:PhysicsPayload",
    "reco": "parsl_es.payloads.mc.reco:RecoPayload",
    "simul": "parsl_es.payloads.mc.simul:SimulPayload",
}


def available_payloads() -> dict[str, str]:
    """Payload names mapped to their ``module:Class`` import paths."""
    found = dict(_BUILTIN)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_payload_class(name: str) -> type[Payload]:
    """The payload class registered as ``name``; KeyError if there is none.

    Built-in names are resolved without scanning the installed packages' entry
    points: that scan costs a worker a noticeable part of a second.
    """
    target = _BUILTIN.get(name) or available_payloads()[name]
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Payload)):
        raise TypeError(f"{target} is not a parsl_es Payload")
    return cls


def make_payload(name: str, params: dict[str, Any]) -> Payload:
    """Build a payload from its name and raw parameters (validated by its Params)."""
    cls = load_payload_class(name)
    try:
        return cls(cls.Params(**params))
    except ValidationError as exc:
        raise FatalPayloadError(f"invalid parameters for payload {name!r}: {exc}") from None
