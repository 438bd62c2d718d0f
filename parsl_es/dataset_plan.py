"""Cutting an input dataset (a list of files) into event ranges and merge groups.

``DatasetPlan`` answers the questions ``RangePlan`` answers (range ``i``, the rows
the ledger records, merge group ``g``, the group of a range) for a step that reads
an existing dataset instead of making its own events.

A dataset's event numbers are its files' own: they need not be contiguous, sorted
or start anywhere in particular, so they cannot drive the arithmetic. Positions do:
the plan's events are the positions ``0..events-1`` in the concatenation of the
files in their given order, and every ``first_event``/``last_event`` of a range or
group is such a position (``first_event`` is 0, ``last_event`` is ``events - 1``).
``EventRange.input`` is the file's path and ``EventRange.skip`` the position of the
range's first event inside that file. Seeds and range ids are derived from
positions exactly as ``RangePlan`` derives them from event numbers, so range ``i``
of a plan always has the same id and seed.

Two rules keep a range's work to one file: a range never spans two files (each
file is cut every ``events_per_range`` events from its start; its last range may
be short), and neither does a merge group (cut every ``events_per_merge`` events
from each file's start; its last group may be short). Inside a file the number of
ranges per group is uniform, so only the per-file prefix sums are stored (three
lists of ``len(files) + 1`` integers); a range or a group is found by bisecting
them, O(log files), and no per-range object is kept.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from parsl_es.ranges import EventRange, MergeGroup, StepInput

#: Marks the JSON of a plan, so a ledger value of another kind is not mistaken for one.
JSON_KIND = "dataset-plan"
JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class InputFile:
    """One file of a dataset as counted at submit: resume checks size and checksum."""

    path: str
    size: int
    checksum: str  # adler32, 8 hex digits (parsl_es.fileio.adler32)
    n_events: int


@dataclass(frozen=True, slots=True)
class DatasetPlan:
    """How a dataset's events are cut: ranges and merge groups within files.

    All event numbers in this interface are *positions* in the dataset (see the
    module docstring), not the files' own event numbers.
    """

    campaign: str
    files: tuple[InputFile, ...]
    events_per_range: int
    events_per_merge: int
    seed: int
    #: A later step of a chain that starts from a dataset reads an earlier step's merged
    #: files (``files`` are those, one per merge group of that step, not counted at
    #: submit: size 0, no checksum); its ranges start as each file passes validation.
    input: StepInput | None = None
    #: The dataset the chain started from, where its event numbers are read (for its
    #: first step: ``files`` itself), and the dataset's format.
    origin: tuple[InputFile, ...] = ()
    format: str = "hepmc3"
    # Prefix sums per file, derived in __post_init__: events, ranges and groups
    # before file f are _event_starts[f], _range_starts[f] and _group_starts[f].
    _event_starts: list[int] = field(init=False, repr=False, compare=False)
    _range_starts: list[int] = field(init=False, repr=False, compare=False)
    _group_starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        epr, epm = self.events_per_range, self.events_per_merge
        if epr <= 0 or epm <= 0:
            raise ValueError("events_per_range and events_per_merge must be > 0")
        if epm % epr:
            raise ValueError("events_per_merge must be a multiple of events_per_range")
        if not self.files:
            raise ValueError("a dataset needs at least one file")
        object.__setattr__(self, "files", tuple(self.files))
        if len({f.path for f in self.files}) != len(self.files):
            raise ValueError("a dataset lists the same file twice")
        events, ranges, groups = [0], [0], [0]
        for f in self.files:
            if f.n_events <= 0:
                raise ValueError(f"input file {f.path} has no events")
            events.append(events[-1] + f.n_events)
            ranges.append(ranges[-1] - (-f.n_events // epr))
            groups.append(groups[-1] - (-f.n_events // epm))
        object.__setattr__(self, "_event_starts", events)
        object.__setattr__(self, "_range_starts", ranges)
        object.__setattr__(self, "_group_starts", groups)

    # -- the numbers RangePlan has (no ranges_per_merge: it differs at file ends) --

    @property
    def events(self) -> int:
        return self._event_starts[-1]

    @property
    def first_event(self) -> int:
        return 0

    @property
    def last_event(self) -> int:
        return self._event_starts[-1] - 1

    @property
    def n_ranges(self) -> int:
        return self._range_starts[-1]

    @property
    def n_merges(self) -> int:
        return self._group_starts[-1]

    # -- ranges --

    def _file_of_range(self, index: int) -> int:
        if not 0 <= index < self._range_starts[-1]:
            raise IndexError(f"range index {index} outside 0..{self.n_ranges - 1}")
        return bisect_right(self._range_starts, index) - 1

    def range(self, index: int) -> EventRange:
        f = self._file_of_range(index)
        local = index - self._range_starts[f]
        skip = local * self.events_per_range
        first = self._event_starts[f] + skip
        last = min(first + self.events_per_range - 1, self._event_starts[f + 1] - 1)
        return EventRange(
            campaign=self.campaign,
            index=index,
            first_event=first,
            last_event=last,
            merge_group=self._group_starts[f] + local // self._ranges_per_group,
            campaign_seed=self.seed,
            input=self.files[f].path,
            skip=skip,
        )

    def rows(self, indices: list[int]) -> list[tuple[int, str, int, int, int]]:
        """``(index, id, first_event, last_event, merge_group)`` of ranges, by arithmetic alone.

        The same rows as ``RangePlan.rows`` (what the ledger records of a range).
        The dispatch loop asks for runs of consecutive indices, so the file found for
        one index is kept while the next ones fall in it: a bisection per file
        crossed, not per range.
        """
        epr, rpg, campaign = self.events_per_range, self._ranges_per_group, self.campaign
        rs, es, gs, n = self._range_starts, self._event_starts, self._group_starts, self.n_ranges
        lo = hi = 0  # ranges of the current file: lo <= i < hi
        out = []
        for i in indices:
            if not lo <= i < hi:
                if not 0 <= i < n:
                    raise IndexError(f"range index {i} outside 0..{n - 1}")
                f = bisect_right(rs, i) - 1
                lo, hi, start, end, g0 = rs[f], rs[f + 1], es[f], es[f + 1] - 1, gs[f]
            local = i - lo
            first = start + local * epr
            last = min(first + epr - 1, end)
            out.append((i, f"{campaign}-{first}-{last}", first, last, g0 + local // rpg))
        return out

    # -- merge groups --

    @property
    def _ranges_per_group(self) -> int:
        """Ranges per group inside a file (a file's last group may have fewer)."""
        return self.events_per_merge // self.events_per_range

    def _file_of_group(self, index: int) -> int:
        if not 0 <= index < self._group_starts[-1]:
            raise IndexError(f"merge group {index} outside 0..{self.n_merges - 1}")
        return bisect_right(self._group_starts, index) - 1

    def group(self, index: int) -> MergeGroup:
        f = self._file_of_group(index)
        local = index - self._group_starts[f]
        rpg = self._ranges_per_group
        first_range = self._range_starts[f] + local * rpg
        first_event = self._event_starts[f] + local * self.events_per_merge
        return MergeGroup(
            campaign=self.campaign,
            index=index,
            first_range=first_range,
            last_range=min(first_range + rpg - 1, self._range_starts[f + 1] - 1),
            first_event=first_event,
            last_event=min(first_event + self.events_per_merge - 1, self._event_starts[f + 1] - 1),
            campaign_seed=self.seed,
        )

    def group_of_range(self, range_index: int) -> int:
        f = self._file_of_range(range_index)
        return self._group_starts[f] + (range_index - self._range_starts[f]) // (
            self._ranges_per_group
        )

    def groups_of(self, indices: Sequence[int]) -> list[int]:
        return [self.group_of_range(i) for i in indices]

    def file_of_group(self, index: int) -> InputFile:
        """The one file whose events merge group ``index`` holds."""
        return self.files[self._file_of_group(index)]

    def input_group(self, index: int) -> int | None:
        """The input step's merge group (= this plan's file) holding range ``index``."""
        return None if self.input is None else self._file_of_range(index)

    def input_ranges(self, group: int) -> range:
        """This step's ranges that read the input step's merged file ``group`` (file ``group``)."""
        return range(self._range_starts[group], self._range_starts[group + 1])

    @property
    def dataset(self) -> tuple[InputFile, ...]:
        """The files the chain's event numbers come from."""
        return self.origin or self.files

    # -- recording in the ledger --

    def to_json(self) -> str:
        """The plan as JSON (the files with their sizes and checksums), for the ledger."""
        return json.dumps(
            {
                "kind": JSON_KIND,
                "version": JSON_VERSION,
                "campaign": self.campaign,
                "events_per_range": self.events_per_range,
                "events_per_merge": self.events_per_merge,
                "seed": self.seed,
                "files": [_file_json(f) for f in self.files],
                "input": None
                if self.input is None
                else {
                    "step": self.input.step,
                    "events_per_merge": self.input.events_per_merge,
                    "suffix": self.input.suffix,
                },
                "origin": [_file_json(f) for f in self.origin],
                "format": self.format,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> DatasetPlan:
        """The plan ``to_json`` wrote; ValueError for anything else."""
        try:
            data: dict[str, Any] = json.loads(text)
            if data.get("kind") != JSON_KIND or data.get("version") != JSON_VERSION:
                raise ValueError(f"not a {JSON_KIND} version {JSON_VERSION}")
            return cls(
                campaign=data["campaign"],
                files=tuple(InputFile(**f) for f in data["files"]),
                events_per_range=data["events_per_range"],
                events_per_merge=data["events_per_merge"],
                seed=data["seed"],
                input=None if data.get("input") is None else StepInput(**data["input"]),
                origin=tuple(InputFile(**f) for f in data.get("origin", ())),
                format=data.get("format", "hepmc3"),
            )
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a recorded dataset plan: {exc}") from None


def _file_json(f: InputFile) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "checksum": f.checksum, "n_events": f.n_events}
