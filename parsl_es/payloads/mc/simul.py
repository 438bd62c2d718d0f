"""The ``simul`` payload: the detector simulation of events read from a HepMC3 file.

The second step of the MC chain. It reads any generator's HepMC3 ASCII output
(not only evgen's), so it assumes nothing about the file's event numbering: an
output event keeps the number the HepMC3 event carries. The detector, its
seeding (campaign seed and event number) and the ``events`` tree are the
physics payload's (``physics.sim_output``): the same particles give the same
response bit for bit, and the physics payload's validation, histograms and
re-simulation of stored events serve this payload's files unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from parsl_es import rootio
from parsl_es.payloads.base import PayloadParams
from parsl_es.payloads.mc import hepmc3
from parsl_es.payloads.mc.inputs import InputParams, check_numbers, input_path
from parsl_es.payloads.physics.generator import ChargeTable, GenParticles
from parsl_es.payloads.physics.params import DetectorParams
from parsl_es.payloads.physics.sim_output import DetectorPayload
from parsl_es.ranges import EventRange


class SimulParams(InputParams, DetectorParams):
    """The detector's parameters (shared with physics) and the input check."""


class SimulPayload(DetectorPayload):
    """Simulates the tracker and calorimeter for the final-state particles of HepMC3 events."""

    name: ClassVar[str] = "simul"
    Params: ClassVar[type[PayloadParams]] = SimulParams
    reads: ClassVar[str | None] = "hepmc3"

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self._charges: ChargeTable | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ship only the parameters: the backend and Pythia's particle table stay behind."""
        return {**super().__getstate__(), "_charges": None}

    def setup(self) -> None:
        self.setup_detector()
        # HepMC3 files carry no charges: they come from Pythia's particle table.
        self._charges = ChargeTable()

    def simulate(self, event_range: EventRange, output: Path) -> int:
        if self._charges is None or self._detector is None:
            self.setup()
        assert self._charges is not None
        events = read_input(event_range)
        p: SimulParams = self.params  # type: ignore[assignment]
        numbers = [e.event_number for e in events]
        if p.check_event_numbers:
            check_numbers(event_range, numbers)
        particles = [final_state(e, self._charges) for e in events]
        columns = self.simulate_particles(event_range.campaign_seed, numbers, particles)
        rootio.write_events(output, columns)
        return len(numbers)


def read_input(event_range: EventRange) -> list[hepmc3.Particles]:
    """The range's events of its input file; FatalPayloadError if they are not there."""
    return hepmc3.read_events(input_path(event_range), event_range.skip, event_range.n_events)


def final_state(event: hepmc3.Particles, charges: ChargeTable) -> GenParticles:
    """The status-1 particles of an event, in the detector's float32 columns."""
    keep = event.status == hepmc3.FINAL_STATE
    pid = event.pid[keep].astype(np.int32)
    return GenParticles(
        pid=pid,
        px=event.px[keep].astype(np.float32),
        py=event.py[keep].astype(np.float32),
        pz=event.pz[keep].astype(np.float32),
        e=event.e[keep].astype(np.float32),
        charge=charges(pid),
    )
