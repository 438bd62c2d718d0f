"""The ``evgen`` payload: Pythia 8 events written as HepMC3, the first step of the MC chain.

Generation is split from simulation so that each step can be sized, retried and
validated on its own, and so that the simulation can read events from any
generator. The events are the physics payload's: the same ``PythiaGenerator``,
each event seeded from the campaign seed and its event number alone, so a
range's file does not depend on how the campaign was cut into ranges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import hist
import numpy as np

from parsl_es.payloads.base import EventCheck, Payload, PayloadParams
from parsl_es.payloads.mc import hepmc3
from parsl_es.payloads.physics.generator import ChargeTable, PythiaGenerator, pythia_settings
from parsl_es.payloads.physics.params import GeneratorParams
from parsl_es.payloads.physics.sim_output import log_axis
from parsl_es.ranges import EventRange


class EvgenParams(GeneratorParams):
    """Parameters of the evgen payload: the generator's only (see ``physics.params``)."""


class EvgenPayload(Payload):
    """Generates events with Pythia 8 into HepMC3 ASCII files (final state plus beams)."""

    name: ClassVar[str] = "evgen"
    Params: ClassVar[type[PayloadParams]] = EvgenParams
    suffix: ClassVar[str] = ".hepmc"
    writes: ClassVar[str] = "hepmc3"
    reads: ClassVar[str | None] = None

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self._generator: PythiaGenerator | None = None
        self._charges: ChargeTable | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ship only the parameters: a Pythia instance cannot be pickled."""
        return {**self.__dict__, "_generator": None, "_charges": None}

    def setup(self) -> None:
        p: EvgenParams = self.params  # type: ignore[assignment]
        settings = pythia_settings(p.process, p.ecm_gev, p.pthat_min_gev, p.pythia_settings)
        self._generator = PythiaGenerator(settings)

    def simulate(self, event_range: EventRange, output: Path) -> int:
        if self._generator is None:
            self.setup()
        assert self._generator is not None
        p: EvgenParams = self.params  # type: ignore[assignment]
        seed = event_range.campaign_seed
        with hepmc3.EventWriter(output, p.ecm_gev / 2.0, p.run_number) as writer:
            for number in event_range.event_numbers:
                g = self._generator.generate(seed, number)
                writer.write(number, g.pid, g.px, g.py, g.pz, g.e)
        return event_range.n_events

    def merge(self, inputs: Sequence[Path], output: Path) -> int:
        return hepmc3.concatenate(inputs, output)

    def event_numbers(self, path: Path) -> np.ndarray:
        return hepmc3.scan_event_numbers(path)

    def content_hash(self, path: Path) -> str:
        """SHA-256 of every event's number and particles (id, status, four-momentum).

        Computed from the parsed events, so files that differ only in layout
        (how they were cut and joined, header lines) hash the same.
        """
        digest = hashlib.sha256()
        for event in hepmc3.iter_events(path):
            digest.update(np.int64(event.event_number).tobytes())
            digest.update(np.int64(len(event.pid)).tobytes())
            for column in (event.pid, event.status, event.px, event.py, event.pz, event.e):
                digest.update(np.ascontiguousarray(column).tobytes())
        return digest.hexdigest()

    def check_events(self, path: Path, campaign_seed: int, max_events: int) -> EventCheck:
        """Generate up to ``max_events`` stored events again and compare their particles.

        An event depends on the campaign seed and its number alone, so Pythia must
        give back the stored final state exactly (ids, and momenta at the float32
        precision the generator hands out).
        """
        if self._generator is None:
            self.setup()
        assert self._generator is not None
        check = EventCheck()
        numbers = hepmc3.scan_event_numbers(path)
        if len(numbers) == 0 or max_events <= 0:
            return check
        picks = np.unique(np.linspace(0, len(numbers) - 1, min(len(numbers), max_events)).round())
        for i in picks.astype(int):
            (stored,) = hepmc3.read_events(path, int(i), 1)
            fresh = self._generator.generate(campaign_seed, stored.event_number)
            final = stored.status == hepmc3.FINAL_STATE
            same = np.array_equal(stored.pid[final], fresh.pid) and all(
                np.array_equal(getattr(stored, f)[final], getattr(fresh, f).astype(np.float64))
                for f in ("px", "py", "pz", "e")
            )
            check.exact_checked += 1
            if not same:
                check.mismatched.append(stored.event_number)
        check.builds["pythia"] = check.exact_checked
        return check

    def histograms(self, path: Path) -> dict[str, Any]:
        """Charged final-state multiplicity and pT, with fixed binning (summable)."""
        if self._charges is None:
            self._charges = ChargeTable()
        h = {
            "n_charged": hist.Hist(
                hist.axis.Regular(100, 0, 2000, name="n", label="Charged final-state multiplicity")
            ),
            "charged_pt": hist.Hist(
                log_axis(80, 0.01, 1e4, "pt", "Charged final-state particle pT [GeV]")
            ),
        }
        for event in hepmc3.iter_events(path):
            final = event.status == hepmc3.FINAL_STATE
            charged = final & (self._charges(event.pid) != 0)
            h["n_charged"].fill(np.count_nonzero(charged))
            h["charged_pt"].fill(np.hypot(event.px[charged], event.py[charged]))
        return h
