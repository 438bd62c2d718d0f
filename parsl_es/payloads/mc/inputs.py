"""What the steps that read an earlier step's file share: finding it, checking numbers.

A range of a reading step names its input file and the position of its first
event there (``EventRange.input`` and ``skip``). A missing file or too few
events will not appear on retry, so they are FatalPayloadError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from parsl_es.payloads.base import FatalPayloadError, PayloadParams
from parsl_es.ranges import EventRange


class InputParams(PayloadParams):
    """How strictly a reading step checks the events it is given."""

    check_event_numbers: bool = Field(
        False,
        description="Require the input's events [skip, skip + n) to carry the range's own "
        "event numbers (first_event..last_event), as the earlier steps of the same campaign "
        "write them; off for other producers' files, whose numbering is their own.",
    )


def input_path(event_range: EventRange) -> Path:
    """The range's input file; FatalPayloadError if it has none or it does not exist."""
    if event_range.input is None:
        raise FatalPayloadError(f"range {event_range.id} has no input file to read")
    path = Path(event_range.input)
    if not path.is_file():
        raise FatalPayloadError(f"input {path} of range {event_range.id} does not exist")
    return path


def check_numbers(event_range: EventRange, numbers: Sequence[int]) -> None:
    """Refuse input events whose numbers are not the range's (a mis-cut chain)."""
    expected = list(event_range.event_numbers)
    got = [int(n) for n in numbers]
    if got != expected:
        bad = next(
            (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
            min(len(got), len(expected)),
        )
        found = got[bad] if bad < len(got) else "missing"
        raise FatalPayloadError(
            f"event number mismatch in range {event_range.id}: input {event_range.input} "
            f"entry {event_range.skip + bad} is event {found}, expected {expected[bad]}"
        )
