"""The ``physics`` payload: Pythia 8 events through a numpy detector into ROOT files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from parsl_es import rootio
from parsl_es.payloads.base import PayloadParams
from parsl_es.payloads.physics.generator import PythiaGenerator, pythia_settings
from parsl_es.payloads.physics.params import DetectorParams, GeneratorParams
from parsl_es.payloads.physics.sim_output import DetectorPayload, simulate_detector
from parsl_es.ranges import EventRange

__all__ = ["PhysicsParams", "PhysicsPayload", "simulate_detector"]


class PhysicsParams(DetectorParams, GeneratorParams):
    """Parameters of the physics payload: the generator's and the detector's (``params``)."""


class PhysicsPayload(DetectorPayload):
    """Generates events with Pythia 8 and simulates a tracker and a calorimeter.

    Every event is seeded from the campaign seed and its event number alone, so
    a range's output does not depend on how the campaign was cut into ranges.
    """

    name: ClassVar[str] = "physics"
    Params: ClassVar[type[PayloadParams]] = PhysicsParams

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self._generator: PythiaGenerator | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ship only the parameters: a Pythia instance cannot be pickled."""
        return {**super().__getstate__(), "_generator": None}

    def setup(self) -> None:
        p: PhysicsParams = self.params  # type: ignore[assignment]
        settings = pythia_settings(p.process, p.ecm_gev, p.pthat_min_gev, p.pythia_settings)
        self._generator = PythiaGenerator(settings)
        self.setup_detector()

    def simulate(self, event_range: EventRange, output: Path) -> int:
        if self._generator is None or self._detector is None or self._backend is None:
            self.setup()
        assert self._generator is not None
        seed = event_range.campaign_seed
        numbers = list(event_range.event_numbers)
        particles = [self._generator.generate(seed, number) for number in numbers]
        rootio.write_events(output, self.simulate_particles(seed, numbers, particles))
        return len(numbers)
