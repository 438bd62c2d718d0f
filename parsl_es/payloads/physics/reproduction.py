"""Re-derive stored events from their generator record: by hash, or in distribution.

A file keeps each event's generated particles, so the detector response can be
simulated again without Pythia. Events made by the numpy reference must come
back bit for bit. Events made by a GPU build (torch, cupy) drew other random
numbers: their tracker hits must still be identical (the tracker always runs on
the CPU), and their calorimeter response is compared with two fresh reference
responses of the same particles. If the build is sound, the three are draws of
one distribution, so the stored value is the lowest, middle or highest of the
three equally often; a biased or mis-scaled build shifts those ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from parsl_es import rootio
from parsl_es.payloads.base import EventCheck
from parsl_es.payloads.physics.calo_backends import BACKEND_CODES, BACKEND_NAMES, REFERENCE
from parsl_es.payloads.physics.detector import Cells, Detector, Hits, Kinematics
from parsl_es.payloads.physics.generator import GenParticles
from parsl_es.ranges import derive_seed

#: Per-event calorimeter observables compared in distribution.
OBSERVABLES: dict[str, Callable[[Cells], float]] = {
    "calo_energy": lambda c: float(c.e.sum(dtype=np.float64)),
    "calo_cells": lambda c: float(len(c.e)),
    "calo_mean_abs_eta": lambda c: float(
        np.sum(c.e * np.abs(c.eta), dtype=np.float64) / max(float(c.e.sum()), 1e-9)
    ),
}
#: Independent random streams of the two reference responses.
REFERENCE_STREAMS = ("validation-a", "validation-b")

HIT_FIELDS = ("x", "y", "z", "layer", "particle")
CELL_FIELDS = ("eta", "phi", "e", "layer")


def check_file(
    path: Path,
    detector: Detector,
    campaign_seed: int,
    max_events: int,
    simulate: Callable[..., tuple[Hits, Cells]],
) -> EventCheck:
    """Re-derive up to ``max_events`` events spread evenly over ``path``."""
    data = rootio.read_events(
        path, filter_name=["event_number", "calo_backend", "gen", "hit", "cell"]
    )
    numbers = np.asarray(data["event_number"])
    builds = np.asarray(data.get("calo_backend", np.zeros(len(numbers), dtype=np.int8)))
    check = EventCheck(ranks={name: [0, 0, 0] for name in OBSERVABLES})
    if len(numbers) == 0 or max_events <= 0:
        return check
    picks = np.unique(np.linspace(0, len(numbers) - 1, min(len(numbers), max_events)).round())
    for i in picks.astype(int):
        number = int(numbers[i])
        build = BACKEND_NAMES.get(int(builds[i]), f"unknown-{int(builds[i])}")
        check.builds[build] = check.builds.get(build, 0) + 1
        particles = _particles(data["gen"][i])
        stored_hits, stored_cells = _record(data["hit"][i]), _record(data["cell"][i])
        if build == REFERENCE:
            check.exact_checked += 1
            hits, cells = simulate(detector, particles, campaign_seed, number, None)
            if not (
                _same(hits, stored_hits, HIT_FIELDS) and _same(cells, stored_cells, CELL_FIELDS)
            ):
                check.mismatched.append(number)
            continue
        check.statistical_checked += 1
        hits = _tracker_only(detector, particles, campaign_seed, number)
        if build not in BACKEND_CODES or not _same(hits, stored_hits, HIT_FIELDS):
            check.mismatched.append(number)
        stored = _as_cells(stored_cells)
        references = [
            simulate(detector, particles, campaign_seed, number, None, stream)[1]
            for stream in REFERENCE_STREAMS
        ]
        tie_rng = np.random.default_rng(derive_seed(campaign_seed, "validation-ties", number))
        for name, observable in OBSERVABLES.items():
            rank = _rank(observable(stored), [observable(c) for c in references], tie_rng)
            check.ranks[name][rank] += 1
    return check


def _rank(value: float, others: list[float], rng: np.random.Generator) -> int:
    """Position of ``value`` among ``others`` (0 = lowest); ties broken at random."""
    below = sum(o < value for o in others)
    ties = sum(o == value for o in others)
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def _tracker_only(
    detector: Detector, particles: GenParticles, campaign_seed: int, number: int
) -> Hits:
    """The hits of the event's own stream: the tracker draws first, on the CPU."""
    rng = np.random.default_rng(derive_seed(campaign_seed, "detector", number))
    return detector.tracker(Kinematics.of(particles), rng)


def _particles(gen: Any) -> GenParticles:
    cols = _record(gen)
    return GenParticles(
        pid=cols["pid"].astype(np.int32),
        px=cols["px"].astype(np.float32),
        py=cols["py"].astype(np.float32),
        pz=cols["pz"].astype(np.float32),
        e=cols["e"].astype(np.float32),
        charge=cols["charge"].astype(np.int8),
    )


def _record(item: Any) -> dict[str, np.ndarray]:
    """The fields of one event's jagged record list as numpy arrays."""
    return {f: ak.to_numpy(item[f]) for f in item.fields}


def _as_cells(cols: dict[str, np.ndarray]) -> Cells:
    return Cells(eta=cols["eta"], phi=cols["phi"], e=cols["e"], layer=cols["layer"])


def _same(obj: Hits | Cells, stored: dict[str, np.ndarray], fields: tuple[str, ...]) -> bool:
    """Identical to the stored values at the stored precision."""
    for f in fields:
        ours = np.asarray(getattr(obj, f)).astype(stored[f].dtype)
        if not np.array_equal(ours, stored[f]):
            return False
    return True
