"""The payload interface: what the engine asks of anything that processes events.

The engine (ranges, ledger, dispatcher) never imports a particular payload; it
asks the registry for one by the name in the campaign file. A payload writes the
events of one range to a path the engine gives it, merges range files into one
file, and reads event numbers and physics histograms back for validation. The
engine does the rest: temporary names, fsync, rename, checksums, the ledger.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from parsl_es.ranges import EventRange
from parsl_es.records import TransformStart


class PayloadParams(BaseModel):
    """Base of every payload's parameter model: unknown keys are errors.

    Strict: ``true`` is no count and ``2.5`` no integer (YAML would pass both on);
    numbers are finite (``.inf`` and ``1e400`` are refused).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PayloadError(Exception):
    """A payload failed on a range. Transient by default: the range is retried."""

    transient: bool = True


class FatalPayloadError(PayloadError):
    """A failure that will never succeed on retry (bad parameters, bad input)."""

    transient = False


class TransformLost(PayloadError):
    """The long-lived process serving ranges died or was killed while holding one.

    Like a lost worker it says nothing about the range, so the range is redone
    without spending one of its attempts (``failures.classify``: infrastructure).
    """


@dataclass
class EventCheck:
    """Events of a file re-derived independently of the run that wrote them.

    Events from a reproducible build must come out identical (``mismatched``
    lists those that did not). Events from a build that draws other random
    numbers (a GPU build) are compared in distribution: for each observable,
    ``ranks`` counts how often the file's value was the lowest, middle or highest
    of itself and two fresh reference draws of the same event; a sound build
    gives each rank a third of the time.
    """

    exact_checked: int = 0
    mismatched: list[int] = field(default_factory=list)
    statistical_checked: int = 0
    ranks: dict[str, list[int]] = field(default_factory=dict)
    builds: dict[str, int] = field(default_factory=dict)


class Payload(ABC):
    """Processes event ranges. One instance lives per worker process and is reused.

    Subclasses set ``name`` and ``Params``; ``setup`` holds expensive
    initialisation (a generator's ``init``, a geometry) and is called once per
    worker process before the first range.
    """

    name: ClassVar[str]
    Params: ClassVar[type[PayloadParams]] = PayloadParams
    #: File suffix of range and merged outputs.
    suffix: ClassVar[str] = ".root"
    #: The format of what the payload writes (``hepmc3``, ``sim-root``, ``aod-root``;
    #: None: not declared) and of what it reads (None: it makes its own events; ``*``:
    #: it makes events or reads whatever it is given). A chain is checked at submit: a
    #: step must read what its input step writes.
    writes: ClassVar[str | None] = None
    reads: ClassVar[str | None] = None

    def __init__(self, params: PayloadParams) -> None:
        self.params = params

    def setup(self) -> None:  # noqa: B027 - optional hook, most payloads need none
        """Expensive once-per-worker initialisation."""

    @abstractmethod
    def simulate(self, event_range: EventRange, output: Path) -> int:
        """Write the events of ``event_range`` to ``output``; return how many.

        A payload that ``reads`` takes the range's events from ``event_range.input``:
        ``event_range.n_events`` events after the first ``event_range.skip``.
        """

    @abstractmethod
    def merge(self, inputs: Sequence[Path], output: Path) -> int:
        """Concatenate range outputs (given in event order) into ``output``."""

    @abstractmethod
    def event_numbers(self, path: Path) -> np.ndarray:
        """The event numbers stored in an output file, in file order."""

    def content_hash(self, path: Path) -> str:
        """A hash of the events' content, independent of file layout and compression."""
        raise NotImplementedError

    def histograms(self, path: Path) -> dict[str, Any]:
        """Physics histograms (``hist.Hist`` objects) filled from an output file."""
        return {}

    def preflight(self) -> dict[str, str]:
        """Problems visible from the driver before anything is written, by parameter name.

        For instance an executable that is not installed: better refused at submit
        than found fatal range after range.
        """
        return {}

    def check_events(self, path: Path, campaign_seed: int, max_events: int) -> EventCheck | None:
        """Re-derive up to ``max_events`` events of ``path`` and compare (None: cannot)."""
        return None

    def take_transform_starts(self) -> list[TransformStart]:
        """Starts of long-lived external processes since last asked (the engine records them).

        Only a payload that keeps a transform alive across ranges has any.
        """
        return []
