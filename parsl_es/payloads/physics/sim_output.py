"""What every payload that runs the detector shares: its parameters, its output tree.

The ``physics`` payload (Pythia, then the detector) and the ``simul`` payload
(particles read from a HepMC3 file, then the detector) write the same ``events``
tree, so histograms, validation and the re-simulation of stored events
(``reproduction.py``) serve both. Keeping the tree's layout, the per-event
seeding and the parameters in one place is what guarantees that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import hist
import numpy as np
import uproot

from parsl_es import rootio
from parsl_es.payloads.base import EventCheck, PayloadParams
from parsl_es.payloads.physics.calo_backends import CaloBackend, select_backend
from parsl_es.payloads.physics.detector import Cells, Detector, DetectorConfig, Hits
from parsl_es.payloads.physics.generator import GenParticles
from parsl_es.payloads.physics.params import DetectorParams
from parsl_es.payloads.physics.reproduction import check_file
from parsl_es.payloads.rootfiles import RootTreePayload
from parsl_es.ranges import derive_seed


class DetectorPayload(RootTreePayload):
    """A payload that simulates the detector for particles and writes the ``events`` tree.

    Subclasses say where the particles come from (``simulate``); the detector and
    calorimeter backend are built once per worker by ``setup_detector``.
    """

    writes: ClassVar[str] = "sim-root"
    Params: ClassVar[type[PayloadParams]] = DetectorParams

    def __init__(self, params: PayloadParams) -> None:
        super().__init__(params)
        self._detector: Detector | None = None
        self._backend: CaloBackend | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Ship only the parameters: a GPU backend holds device state; workers rebuild it."""
        return {**self.__dict__, "_detector": None, "_backend": None}

    def setup_detector(self) -> None:
        p: DetectorParams = self.params  # type: ignore[assignment]
        self._detector = self.detector()
        self._backend = select_backend(p.device, p.array_library)

    def detector(self) -> Detector:
        p: DetectorParams = self.params  # type: ignore[assignment]
        return Detector(
            DetectorConfig(calo_quantum_gev=p.calo_quantum_gev, noise_gev=p.noise_mev / 1000.0)
        )

    def simulate_particles(
        self, campaign_seed: int, numbers: Sequence[int], particles: Sequence[GenParticles]
    ) -> dict[str, Any]:
        """The detector response of each event, as the ``events`` tree's columns."""
        if self._detector is None or self._backend is None:
            self.setup_detector()
        assert self._detector is not None and self._backend is not None
        events = []
        for number, parts in zip(numbers, particles, strict=True):
            hits, cells = simulate_detector(
                self._detector, parts, campaign_seed, int(number), self._backend
            )
            events.append((parts, hits, cells))
        array = np.asarray(numbers, dtype=np.int64)
        columns = self._columns(array, events)
        columns["calo_backend"] = np.full(len(array), self._backend.code, dtype=np.int8)
        return columns

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


def log_axis(bins: int, start: float, stop: float, name: str, label: str) -> hist.axis.Regular:
    """A fixed log-spaced axis (energies and momenta span decades)."""
    return hist.axis.Regular(
        bins, start, stop, transform=hist.axis.transform.log, name=name, label=label
    )


def _empty_histograms() -> dict[str, hist.Hist]:
    axes = {
        "calo_energy": log_axis(60, 10.0, 1e5, "e", "Total calorimeter energy [GeV]"),
        "met": log_axis(60, 1.0, 1e4, "met", "Missing transverse energy (cells) [GeV]"),
        "n_charged": hist.axis.Regular(
            100, 0, 2000, name="n", label="Generator charged multiplicity"
        ),
        "n_hits": hist.axis.Regular(100, 0, 5000, name="n", label="Tracker hits per event"),
        "gen_charged_pt": log_axis(80, 0.01, 1e4, "pt", "Generator charged particle pT [GeV]"),
        "cell_energy": log_axis(80, 0.01, 1e4, "e", "Calorimeter cell energy [GeV]"),
    }
    return {name: hist.Hist(axis) for name, axis in axes.items()}
