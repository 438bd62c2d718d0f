"""The event-service messages between a worker and a long-lived transform.

Modelled on AthenaMP's event-service exchange (the pilot and Raythena speak it
over yampl): the transform starts once, initialises, then asks for work and
reports each range it finishes. Messages are UTF-8 lines on one Unix domain
socket per transform (the worker listens, the transform connects):

transform -> worker
    ``Ready for events`` or ``Ready for events N``: it wants one (or up to N) ranges;
    ``<output path>,ID:<eventRangeID>,CPU:<seconds>,WALL:<seconds>``: a range done;
    ``ERR_ATHENAMP_PROCESS <eventRangeID>: <message>``: a range failed (retried);
    ``ERR_TE_FATAL <eventRangeID>: <message>``: a range failed for good.
worker -> transform
    a JSON array of range objects (``eventRangeID``, ``firstEventNumber``,
    ``lastEventNumber``, ``seed``, and ``PFN``/``LFN``/``GUID``/``startEvent``/
    ``lastEvent`` for ranges read from an input file, else null);
    ``No more events``: nothing more for it; it exits 0.

This module only turns lines into typed messages and back: both sides (the
worker's ``service`` and a transform written in Python, such as the physics
CLI's service mode) use it, so the two cannot drift apart. It imports nothing
of parsl-es, so a transform that uses it starts in milliseconds.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

READY = "Ready for events"
NO_MORE = "No more events"
ERR_RETRY = "ERR_ATHENAMP_PROCESS"
ERR_FATAL = "ERR_TE_FATAL"
#: A line longer than this is garbage, not a message (an output path is at most 4096).
MAX_LINE = 65536

_READY = re.compile(rf"{READY}(?: (\d{{1,6}}))?")
_DONE = re.compile(r"(?P<path>.+),ID:(?P<id>[^,]+),CPU:(?P<cpu>[^,]+),WALL:(?P<wall>[^,]+)")
_ERROR = re.compile(rf"(?P<kind>{ERR_RETRY}|{ERR_FATAL}) (?P<id>[^:]+): ?(?P<message>.*)")


class ProtocolError(ValueError):
    """A line that is no message of the protocol."""


@dataclass(frozen=True, slots=True)
class Ready:
    """The transform wants up to ``n`` more ranges."""

    n: int = 1


@dataclass(frozen=True, slots=True)
class RangeDone:
    """The transform finished a range and wrote its events to ``path``."""

    range_id: str
    path: str
    cpu: float
    wall: float


@dataclass(frozen=True, slots=True)
class RangeFailed:
    """The transform failed a range; ``fatal``: retrying it will not help."""

    range_id: str
    message: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class RangeMessage:
    """One range as the worker hands it to the transform."""

    range_id: str
    first_event: int
    last_event: int
    seed: int
    pfn: str | None = None
    lfn: str | None = None
    guid: str | None = None
    start_event: int | None = None  # 1-based positions in the input file, as PanDA counts
    last_event_in_file: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "eventRangeID": self.range_id,
            "firstEventNumber": self.first_event,
            "lastEventNumber": self.last_event,
            "seed": self.seed,
            "PFN": self.pfn,
            "LFN": self.lfn,
            "GUID": self.guid,
            "startEvent": self.start_event,
            "lastEvent": self.last_event_in_file,
        }


TransformMessage = Ready | RangeDone | RangeFailed


def parse_transform_line(line: str) -> TransformMessage:
    """A transform's line as a message; ``ProtocolError`` for anything else."""
    text = line.rstrip("\r\n")
    if len(text) > MAX_LINE:
        raise ProtocolError(f"a line of {len(text)} characters")
    if m := _READY.fullmatch(text):
        n = int(m.group(1) or 1)
        if n < 1:
            raise ProtocolError(f"asked for {n} ranges: {text!r}")
        return Ready(n)
    if m := _ERROR.fullmatch(text):
        return RangeFailed(m["id"].strip(), m["message"], fatal=m["kind"] == ERR_FATAL)
    if m := _DONE.fullmatch(text):
        cpu, wall = _seconds(m["cpu"], text), _seconds(m["wall"], text)
        return RangeDone(range_id=m["id"].strip(), path=m["path"], cpu=cpu, wall=wall)
    raise ProtocolError(f"not a message of the protocol: {_shown(text)}")


def done_line(range_id: str, path: str, cpu: float, wall: float) -> str:
    return f"{path},ID:{range_id},CPU:{cpu:.3f},WALL:{wall:.3f}"


def failed_line(range_id: str, message: str, fatal: bool = False) -> str:
    one_line = " ".join(message.split())
    return f"{ERR_FATAL if fatal else ERR_RETRY} {range_id}: {one_line}"


def ready_line(n: int = 1) -> str:
    return READY if n == 1 else f"{READY} {n}"


def ranges_line(ranges: list[RangeMessage]) -> str:
    return json.dumps([r.to_json() for r in ranges], separators=(",", ":"))


def parse_worker_line(line: str) -> list[RangeMessage] | None:
    """What the worker sent: ranges, or None for ``No more events`` (transform side)."""
    text = line.rstrip("\r\n")
    if text == NO_MORE:
        return None
    try:
        items = json.loads(text)
    except ValueError:
        raise ProtocolError(f"neither ranges nor {NO_MORE!r}: {_shown(text)}") from None
    if not isinstance(items, list) or not items:
        raise ProtocolError(f"ranges must be a non-empty JSON array: {_shown(text)}")
    out = []
    for item in items:
        try:
            out.append(
                RangeMessage(
                    range_id=str(item["eventRangeID"]),
                    first_event=int(item["firstEventNumber"]),
                    last_event=int(item["lastEventNumber"]),
                    seed=int(item["seed"]),
                    pfn=item.get("PFN"),
                    lfn=item.get("LFN"),
                    guid=item.get("GUID"),
                    start_event=item.get("startEvent"),
                    last_event_in_file=item.get("lastEvent"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"a range without {exc}: {_shown(json.dumps(item))}") from None
    return out


def _seconds(text: str, line: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ProtocolError(f"not a number of seconds ({text!r}): {_shown(line)}") from None
    if not math.isfinite(value) or value < 0:
        raise ProtocolError(f"not a number of seconds ({text!r}): {_shown(line)}")
    return value


def _shown(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
