"""Cutting a campaign into event ranges and merge groups, and deriving seeds.

Ranges are a pure function of the campaign's numbers: range ``i`` always covers
the same events and carries the same seed, so the ledger only has to store the
ranges that have been touched, and a range gives identical events whichever
worker or attempt runs it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

#: Seeds are kept in Pythia's accepted interval 1..900,000,000.
MAX_SEED = 900_000_000
#: The seed rule, in one place: ``derive_seed`` below computes it, and the job report
#: states it from these same constants (``seed_rule``), so the two cannot drift.
SEED_HASH = "blake2b"
SEED_DIGEST_SIZE = 8
SEED_BYTEORDER = "little"
SEED_SEPARATOR = ":"
EVENT_LABEL = "event"
RANGE_LABEL = "range"
_hash = getattr(hashlib, SEED_HASH)


def derive_seed(campaign_seed: int, *parts: int | str) -> int:
    """A seed in 1..MAX_SEED from the campaign seed and any labels.

    A cryptographic hash, so that neighbouring events or ranges get unrelated
    random streams (an additive seed would correlate them).
    """
    text = SEED_SEPARATOR.join(str(p) for p in (campaign_seed, *parts)).encode()
    digest = _hash(text, digest_size=SEED_DIGEST_SIZE).digest()
    return int.from_bytes(digest, SEED_BYTEORDER) % MAX_SEED + 1


def event_seed(campaign_seed: int, event_number: int) -> int:
    """The seed of one event: independent of how events are cut into ranges."""
    return derive_seed(campaign_seed, EVENT_LABEL, event_number)


def range_seed(campaign_seed: int, first_event: int) -> int:
    """The seed of a range, from the campaign seed and the range's first event."""
    return derive_seed(campaign_seed, RANGE_LABEL, first_event)


def seed_rule() -> dict[str, str | int]:
    """How ``event_seed`` and ``range_seed`` are computed, stated for provenance.

    Enough to recompute any seed without parsl-es: the UTF-8 text (a template
    below, ``{...}`` filled with decimal integers), hashed with ``hash`` at
    ``digest_size`` bytes, read as an unsigned integer of ``byteorder``, then
    ``% modulus + offset``.
    """
    sep = SEED_SEPARATOR
    formula = (
        f"int.from_bytes({SEED_HASH}(text.encode(), digest_size={SEED_DIGEST_SIZE}).digest(), "
        f"'{SEED_BYTEORDER}') % {MAX_SEED} + 1"
    )
    event_text = sep.join(("{campaign_seed}", EVENT_LABEL, "{event_number}"))
    range_text = sep.join(("{campaign_seed}", RANGE_LABEL, "{first_event}"))
    return {
        "rule": (
            f"seed = {formula}; event seed: text = '{event_text}'; "
            f"range seed: text = '{range_text}' (parsl_es.ranges.derive_seed)"
        ),
        "hash": SEED_HASH,
        "digest_size": SEED_DIGEST_SIZE,
        "byteorder": SEED_BYTEORDER,
        "modulus": MAX_SEED,
        "offset": 1,
        "event_seed_text": event_text,
        "range_seed_text": range_text,
    }


@dataclass(frozen=True, slots=True)
class EventRange:
    """A contiguous block of events ``[first_event, last_event]`` (inclusive)."""

    campaign: str
    index: int
    first_event: int
    last_event: int
    merge_group: int
    campaign_seed: int
    #: The file this range reads its events from (a step with an input: an earlier
    #: step's merged file or a dataset file), and how many events of it come before
    #: the range's first. None for a step that makes its own events (generation).
    input: str | None = None
    skip: int = 0

    @property
    def seed(self) -> int:
        """The range's own seed (from the campaign seed and its first event).

        Computed when asked for: a hash per range is a cost the dispatch loop of a
        million-range campaign does not need to pay.
        """
        return range_seed(self.campaign_seed, self.first_event)

    @property
    def id(self) -> str:
        return f"{self.campaign}-{self.first_event}-{self.last_event}"

    @property
    def n_events(self) -> int:
        return self.last_event - self.first_event + 1

    @property
    def event_numbers(self) -> range:
        return range(self.first_event, self.last_event + 1)


@dataclass(frozen=True, slots=True)
class MergeGroup:
    """The ranges whose outputs are merged into one file."""

    campaign: str
    index: int
    first_range: int
    last_range: int  # inclusive
    first_event: int
    last_event: int  # inclusive
    campaign_seed: int = 0

    @property
    def n_ranges(self) -> int:
        return self.last_range - self.first_range + 1

    @property
    def n_events(self) -> int:
        return self.last_event - self.first_event + 1

    @property
    def range_indices(self) -> range:
        return range(self.first_range, self.last_range + 1)


def merged_name(campaign: str, group: int, suffix: str) -> str:
    """The file name of a merge group's merged file (in its step's ``merged/``)."""
    return f"{campaign}.merge-{group:06d}{suffix}"


@dataclass(frozen=True, slots=True)
class StepInput:
    """Where a chain step's ranges read their events: an earlier step's merged files.

    The earlier step cuts the same campaign events into merge groups of
    ``events_per_merge``; its group ``g`` is the file
    ``../<step>/merged/<campaign>.merge-<g><suffix>`` seen from this step's directory.
    """

    step: str
    events_per_merge: int
    suffix: str


@dataclass(frozen=True, slots=True)
class RangePlan:
    """How a campaign's events are cut: the arithmetic behind ranges and groups.

    In a chain, a step that reads an earlier step's merged files (``input``) cuts
    the same campaign events its own way; each of its ranges lies within one
    input file (``events_per_range`` divides the input's ``events_per_merge``), so
    a range knows its file and its position in it by arithmetic too.
    """

    campaign: str
    events: int
    first_event: int
    events_per_range: int
    events_per_merge: int
    seed: int
    input: StepInput | None = None

    def __post_init__(self) -> None:
        if self.events <= 0 or self.events_per_range <= 0 or self.events_per_merge <= 0:
            raise ValueError("events, events_per_range and events_per_merge must be > 0")
        if self.events_per_merge % self.events_per_range:
            raise ValueError("events_per_merge must be a multiple of events_per_range")
        if self.input is not None and self.input.events_per_merge % self.events_per_range:
            raise ValueError("events_per_range must divide the input step's events_per_merge")

    def to_json(self) -> dict:
        out = {
            "campaign": self.campaign,
            "events": self.events,
            "first_event": self.first_event,
            "events_per_range": self.events_per_range,
            "events_per_merge": self.events_per_merge,
            "seed": self.seed,
        }
        if self.input is not None:
            out["input"] = {
                "step": self.input.step,
                "events_per_merge": self.input.events_per_merge,
                "suffix": self.input.suffix,
            }
        return out

    @classmethod
    def from_json(cls, data: dict) -> RangePlan:
        given = dict(data)
        if given.get("input") is not None:
            given["input"] = StepInput(**given["input"])
        return cls(**given)

    #: Event numbers are the campaign's own, not a dataset's (see ``DatasetPlan.dataset``).
    dataset = ()

    def input_group(self, index: int) -> int | None:
        """The merge group of the input step whose file holds range ``index`` (None: no input)."""
        if self.input is None:
            return None
        return index * self.events_per_range // self.input.events_per_merge

    def input_ranges(self, group: int) -> range:
        """This step's ranges that read the input step's merged file ``group``."""
        assert self.input is not None
        per_file = self.input.events_per_merge // self.events_per_range
        return range(group * per_file, min((group + 1) * per_file, self.n_ranges))

    @property
    def ranges_per_merge(self) -> int:
        return self.events_per_merge // self.events_per_range

    @property
    def n_ranges(self) -> int:
        return -(-self.events // self.events_per_range)

    @property
    def n_merges(self) -> int:
        return -(-self.events // self.events_per_merge)

    @property
    def last_event(self) -> int:
        return self.first_event + self.events - 1

    def range(self, index: int) -> EventRange:
        if not 0 <= index < self.n_ranges:
            raise IndexError(f"range index {index} outside 0..{self.n_ranges - 1}")
        first = self.first_event + index * self.events_per_range
        last = min(first + self.events_per_range - 1, self.last_event)
        source, skip = None, 0
        if self.input is not None:
            g = (first - self.first_event) // self.input.events_per_merge
            name = merged_name(self.campaign, g, self.input.suffix)
            source = f"../{self.input.step}/merged/{name}"
            skip = first - self.first_event - g * self.input.events_per_merge
        return EventRange(
            campaign=self.campaign,
            index=index,
            first_event=first,
            last_event=last,
            merge_group=index // self.ranges_per_merge,
            campaign_seed=self.seed,
            input=source,
            skip=skip,
        )

    def rows(self, indices: list[int]) -> list[tuple[int, str, int, int, int]]:
        """``(index, id, first_event, last_event, merge_group)`` of ranges, by arithmetic alone.

        What the ledger records of a range, without building ``EventRange``
        objects: the dispatch loop starts tens of thousands of ranges a second.
        """
        epr, rpm, first0, last_event = (
            self.events_per_range,
            self.ranges_per_merge,
            self.first_event,
            self.last_event,
        )
        out = []
        for i in indices:
            first = first0 + i * epr
            last = min(first + epr - 1, last_event)
            out.append((i, f"{self.campaign}-{first}-{last}", first, last, i // rpm))
        return out

    def group(self, index: int) -> MergeGroup:
        if not 0 <= index < self.n_merges:
            raise IndexError(f"merge group {index} outside 0..{self.n_merges - 1}")
        first_range = index * self.ranges_per_merge
        last_range = min(first_range + self.ranges_per_merge - 1, self.n_ranges - 1)
        first_event = self.first_event + first_range * self.events_per_range
        return MergeGroup(
            campaign=self.campaign,
            index=index,
            first_range=first_range,
            last_range=last_range,
            first_event=first_event,
            last_event=min(first_event + self.events_per_merge - 1, self.last_event),
            campaign_seed=self.seed,
        )

    def group_of_range(self, range_index: int) -> int:
        return range_index // self.ranges_per_merge

    def groups_of(self, indices: Sequence[int]) -> list[int]:
        """``group_of_range`` of many ranges at once (every finished range is counted)."""
        per_group = self.ranges_per_merge
        return [i // per_group for i in indices]
