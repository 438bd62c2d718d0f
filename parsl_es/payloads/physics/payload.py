"""The ``physics`` payload: Pythia 8 events through a numpy detector into ROOT files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import awkward as ak
import hist
import numpy as np
import uproot
from pydantic import Field, model_validator

from parsl_es import rootio
from parsl_es.payloads.base import EventCheck, PayloadParams
from parsl_es.payloads.physics.calo_backends import (
    CaloBackend,
    Device,
    Library,
    select_backend,
)
from parsl_es.payloads.physics.detector import Cells, Detector, DetectorConfig, Hits
from parsl_es.payloads.physics.generator import GenParticles, PythiaGenerator, pythia_settings
from parsl_es.payloads.physics.reproduction import check_file
from parsl_es.payloads.rootfiles import RootTreePayload
from parsl_es.ranges import EventRange, derive_seed


class PhysicsParams(PayloadParams):
    """Parameters of the physics payload; every one has a default."""

    process: Literal["ttbar", "qcd", "minbias"] = Field(
        "ttbar", description="Hard process: top pairs, QCD dijets, or non-diffractive minimum bias."
    )
    ecm_gev: float = Field(13600.0, gt=0, description="Centre-of-mass energy in GeV.")
    pthat_min_gev: float = Field(
        20.0, ge=0, description="Minimum pT of the hard scattering in GeV (qcd only)."
    )
    run_number: int = Field(1, ge=0, description="Run number stored with every event.")
    pythia_settings: list[str] = Field(
        default_factory=list,
        description="Extra Pythia readString lines, applied after the built-in ones.",
    )
    calo_quantum_gev: float = Field(
        0.05,
        gt=0,
        description="Energy of one calorimeter shower quantum in GeV; the calorimeter's cost "
        "scales as 1/quantum and its stochastic resolution as sqrt(quantum).",
    )
    noise_mev: float = Field(30.0, gt=0, description="Electronics noise per calorimeter cell, MeV.")
    device: Device = Field(
        "cpu",
        description="Where the calorimeter showers are sampled: cpu (numpy, reproducible bit "
        "by bit), gpu (torch or cupy on the worker's GPU; a worker without one fails the "
        "range), or auto (the GPU where the worker owns one, the CPU elsewhere).",
    )
    array_library: Library = Field(
        "auto",
        description="Library for the showers: auto (numpy on the CPU; torch, else cupy, on a "
        "GPU), numpy, torch (also on the CPU: the GPU build, checked on a CPU) or cupy.",
    )

    @model_validator(mode="after")
    def _device_and_library(self) -> PhysicsParams:
        if self.array_library == "numpy" and self.device == "gpu":
            raise ValueError("array_library numpy runs on the CPU only; use device: cpu or auto")
        if self.array_library == "cupy" and self.device == "cpu":
            raise ValueError("array_library cupy runs on GPUs only; use device: gpu or auto")
        return self


class PhysicsPayload(RootTreePayload):
    """Generates events with Pythia 8 and simulates a tracker and a calorimeter.

    Every event is seeded from the campaign seed and its event number alone, so
    a range's output does not depend on how the campaign was cut into ranges.
    """

    name: ClassVar[str] = "physics"
    writes: ClassVar[str] = "sim-root"
    Params: ClassVar[type[PayloadParams]] = PhysicsParams

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self._generator: PythiaGenerator | None = None
        self._detector: Detector | None = None
        self._backend: CaloBackend | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ship only the parameters: a Pythia instance cannot be pickled."""
        return {**self.__dict__, "_generator": None, "_detector": None, "_backend": None}

    def setup(self) -> None:
        p: PhysicsParams = self.params  # type: ignore[assignment]
        settings = pythia_settings(p.process, p.ecm_gev, p.pthat_min_gev, p.pythia_settings)
        self._generator = PythiaGenerator(settings)
        self._detector = self.detector()
        self._backend = select_backend(p.device, p.array_library)

    def detector(self) -> Detector:
        p: PhysicsParams = self.params  # type: ignore[assignment]
        return Detector(
            DetectorConfig(calo_quantum_gev=p.calo_quantum_gev, noise_gev=p.noise_mev / 1000.0)
        )

    def simulate(self, event_range: EventRange, output: Path) -> int:
        if self._generator is None or self._detector is None or self._backend is None:
            self.setup()
        assert self._generator is not None and self._detector is not None
        seed = event_range.campaign_seed
        events = []
        for number in event_range.event_numbers:
            particles = self._generator.generate(seed, number)
            hits, cells = simulate_detector(self._detector, particles, seed, number, self._backend)
            events.append((particles, hits, cells))
        numbers = np.asarray(event_range.event_numbers, dtype=np.int64)
        columns = self._columns(numbers, events)
        assert self._backend is not None
        columns["calo_backend"] = np.full(len(numbers), self._backend.code, dtype=np.int8)
        rootio.write_events(output, columns)
        return len(numbers)

    def _columns(
        self, numbers: np.ndarray, events: list[tuple[GenParticles, Hits, Cells]]
    ) -> dict[str, Any]:
        """The flat scalar columns and the ``gen``, ``hit`` and ``cell`` jagged groups."""
        gens, hits, cells = zip(*events, strict=True) if events else ((), (), ())
        run: int = self.params.run_number  # type: ignore[attr-defined]
        return {
            "event_number": numbers,
            "run_number": np.full(len(numbers), run, dtype=np.int32),
            "n_charged": np.array([np.count_nonzero(g.charge) for g in gens], dtype=np.int32),
            "calo_energy": np.array([c.e.sum(dtype=np.float64) for c in cells], dtype=np.float32),
            "met": np.array([_met(c) for c in cells], dtype=np.float32),
            "gen": _jagged(gens, ("pid", "px", "py", "pz", "e", "charge")),
            "hit": _jagged(hits, ("x", "y", "z", "layer", "particle")),
            "cell": _jagged(cells, ("eta", "phi", "e", "layer")),
        }

    def check_events(self, path: Path, campaign_seed: int, max_events: int) -> EventCheck:
        """Re-simulate the detector for a sample of stored events (see ``reproduction``)."""
        return check_file(path, self.detector(), campaign_seed, max_events, simulate_detector)

    def histograms(self, path: Path) -> dict[str, Any]:
        """Fixed-binning histograms, so those of different files can be summed."""
        branches = ["calo_energy", "met", "n_charged", "nhit", "gen_px", "gen_py", "gen_charge"]
        with uproot.open(path) as f:
            data = f[rootio.TREE].arrays([*branches, "cell_e"], library="ak")
        charged = data.gen_charge != 0
        gen_pt = np.hypot(data.gen_px[charged], data.gen_py[charged])
        h = _empty_histograms()
        h["calo_energy"].fill(ak.to_numpy(data.calo_energy))
        h["met"].fill(ak.to_numpy(data.met))
        h["n_charged"].fill(ak.to_numpy(data.n_charged))
        h["n_hits"].fill(ak.to_numpy(data.nhit))
        h["gen_charged_pt"].fill(ak.to_numpy(ak.flatten(gen_pt)))
        h["cell_energy"].fill(ak.to_numpy(ak.flatten(data.cell_e)))
        return h


def simulate_detector(
    detector: Detector,
    particles: GenParticles,
    campaign_seed: int,
    number: int,
    backend: CaloBackend | None,
    stream: str = "detector",
) -> tuple[Hits, Cells]:
    """The detector response of one event, seeded by the campaign seed and event number.

    ``stream`` names an independent random stream: validation draws fresh
    reference responses of the same particles from other streams.
    """
    rng = np.random.default_rng(derive_seed(campaign_seed, stream, number))
    shower_seed = derive_seed(campaign_seed, stream, "showers", number)
    return detector.simulate(particles, rng, backend, shower_seed)


def _met(cells: Cells) -> float:
    """Missing transverse energy from all kept cells (noise included, as in data)."""
    et = cells.e.astype(np.float64) / np.cosh(cells.eta.astype(np.float64))
    phi = cells.phi.astype(np.float64)
    return float(np.hypot(np.sum(et * np.cos(phi)), np.sum(et * np.sin(phi))))


def _jagged(items: Sequence[Any], fields: Sequence[str]) -> ak.Array:
    """One record list per event from per-event objects holding equal-length arrays."""
    counts = np.array([len(getattr(item, fields[0])) for item in items], dtype=np.int64)
    flat = {f: np.concatenate([getattr(item, f) for item in items]) for f in fields}
    return ak.unflatten(ak.zip(flat), counts)


def _log_axis(bins: int, start: float, stop: float, name: str, label: str) -> hist.axis.Regular:
    return hist.axis.Regular(
        bins, start, stop, transform=hist.axis.transform.log, name=name, label=label
    )


def _empty_histograms() -> dict[str, hist.Hist]:
    axes = {
        "calo_energy": _log_axis(60, 10.0, 1e5, "e", "Total calorimeter energy [GeV]"),
        "met": _log_axis(60, 1.0, 1e4, "met", "Missing transverse energy (cells) [GeV]"),
        "n_charged": hist.axis.Regular(
            100, 0, 2000, name="n", label="Generator charged multiplicity"
        ),
        "n_hits": hist.axis.Regular(100, 0, 5000, name="n", label="Tracker hits per event"),
        "gen_charged_pt": _log_axis(80, 0.01, 1e4, "pt", "Generator charged particle pT [GeV]"),
        "cell_energy": _log_axis(80, 0.01, 1e4, "e", "Calorimeter cell energy [GeV]"),
    }
    return {name: hist.Hist(axis) for name, axis in axes.items()}
