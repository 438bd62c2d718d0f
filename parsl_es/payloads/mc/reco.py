"""The ``reco`` payload: clusters, anti-kt jets and missing ET from simulated cells.

The last step of the MC chain turns the simulation's ``events`` tree (the
physics or simul payload's: what ``sim-root`` means) into an AOD-like tree of
physics objects. It uses only what a detector records, the calorimeter cells:
topological clusters (``clusters.py``), anti-kt R = 0.4 jets clustered by
FastJet from the clusters' massless four-vectors (each the sum of its cells'
momenta), and the missing transverse energy balancing the clusters. Output
events keep their input event numbers.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, ClassVar

import awkward as ak
import hist
import numpy as np
import uproot
from pydantic import Field, model_validator

from parsl_es import rootio
from parsl_es.payloads.base import FatalPayloadError, PayloadParams
from parsl_es.payloads.mc.clusters import Clusters, Thresholds, cluster_event
from parsl_es.payloads.mc.inputs import InputParams, check_numbers, input_path
from parsl_es.payloads.physics.sim_output import log_axis
from parsl_es.payloads.rootfiles import RootTreePayload
from parsl_es.ranges import EventRange

#: What reco reads of a simulated events tree.
INPUT_BRANCHES = ("event_number", "cell_eta", "cell_phi", "cell_e", "cell_layer")


class RecoParams(InputParams):
    """Clustering, jet and input-check parameters; every one has a default."""

    cell_noise_mev: float = Field(
        30.0, gt=0, description="Noise per calorimeter cell in MeV (the simulation's noise_mev)."
    )
    seed_sigma: float = Field(
        4.0, gt=0, description="A cell seeds a cluster above this many noise sigmas."
    )
    grow_sigma: float = Field(
        2.0, ge=0, description="A cell extends a cluster to its neighbours above this many sigmas."
    )
    perimeter_sigma: float = Field(
        0.0, ge=0, description="Neighbours above this many sigmas join a cluster as its rim."
    )
    jet_radius: float = Field(0.4, gt=0, le=1.5, description="Anti-kt distance parameter R.")
    jet_pt_min_gev: float = Field(20.0, ge=0, description="Jets below this pT are not kept, GeV.")

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> RecoParams:
        if not self.perimeter_sigma <= self.grow_sigma <= self.seed_sigma:
            raise ValueError("need perimeter_sigma <= grow_sigma <= seed_sigma")
        return self


class RecoPayload(RootTreePayload):
    """Reconstructs clusters, jets and MET from a simulated ``events`` tree."""

    name: ClassVar[str] = "reco"
    Params: ClassVar[type[PayloadParams]] = RecoParams
    reads: ClassVar[str | None] = "sim-root"
    writes: ClassVar[str] = "aod-root"

    def simulate(self, event_range: EventRange, output: Path) -> int:
        p: RecoParams = self.params  # type: ignore[assignment]
        data = read_cells(input_path(event_range), event_range.skip, event_range.n_events)
        numbers = ak.to_numpy(data["event_number"]).astype(np.int64)
        if p.check_event_numbers:
            check_numbers(event_range, numbers.tolist())
        thresholds = Thresholds(
            noise_gev=p.cell_noise_mev / 1000.0,
            seed=p.seed_sigma,
            grow=p.grow_sigma,
            perimeter=p.perimeter_sigma,
        )
        clusters = cluster_events(data, thresholds)
        jets = find_jets(clusters, p.jet_radius, p.jet_pt_min_gev)
        met, met_phi = (
            zip(*(missing_et(c) for c in clusters), strict=True) if clusters else ((), ())
        )
        run = data["run_number"] if "run_number" in data.fields else np.zeros(len(numbers))
        rootio.write_events(
            output,
            {
                "event_number": numbers,
                "run_number": ak.to_numpy(run).astype(np.int32),
                "n_clusters": np.array([len(c.e) for c in clusters], dtype=np.int32),
                "met": np.array(met, dtype=np.float32),
                "met_phi": np.array(met_phi, dtype=np.float32),
                "n_jets": ak.to_numpy(ak.num(jets, axis=1)).astype(np.int32),
                "jet": jets,
            },
            title="parsl-es reco (AOD)",
        )
        return len(numbers)

    def histograms(self, path: Path) -> dict[str, Any]:
        """Jet pT, jet multiplicity and MET with fixed binning (summable over files)."""
        with uproot.open(path) as f:
            data = f[rootio.TREE].arrays(["jet_pt", "n_jets", "met"], library="ak")
        h = {
            "jet_pt": hist.Hist(log_axis(60, 10.0, 1e4, "pt", "Jet pT (anti-kt) [GeV]")),
            "n_jets": hist.Hist(hist.axis.Integer(0, 20, name="n", label="Jets per event")),
            "met": hist.Hist(log_axis(60, 1.0, 1e4, "met", "Missing transverse energy [GeV]")),
        }
        h["jet_pt"].fill(ak.to_numpy(ak.flatten(data.jet_pt)))
        h["n_jets"].fill(ak.to_numpy(data.n_jets))
        h["met"].fill(ak.to_numpy(data.met))
        return h


def read_cells(path: Path, skip: int, n: int) -> ak.Array:
    """Entries [skip, skip + n) of a simulated events tree; FatalPayloadError if absent."""
    try:
        f = uproot.open(path)
    except Exception as exc:
        raise FatalPayloadError(f"{path} is not a ROOT file: {exc}") from None
    with f:
        if rootio.TREE not in f:
            raise FatalPayloadError(f"{path} has no {rootio.TREE!r} tree")
        tree = f[rootio.TREE]
        missing = [b for b in INPUT_BRANCHES if b not in tree]
        if missing:
            raise FatalPayloadError(f"{path}: not a simulated events tree, no {missing}")
        if skip < 0 or skip + n > tree.num_entries:
            raise FatalPayloadError(
                f"{path} holds {tree.num_entries} events; entries [{skip}, {skip + n}) were "
                "asked for"
            )
        wanted = [*INPUT_BRANCHES, *(["run_number"] if "run_number" in tree else [])]
        return tree.arrays(wanted, entry_start=skip, entry_stop=skip + n, library="ak")


def cluster_events(data: ak.Array, thresholds: Thresholds) -> list[Clusters]:
    """Clusters of every event (the cells' columns flattened once, then sliced per event)."""
    offsets = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(data["cell_e"], axis=1)))])
    flat = [ak.to_numpy(ak.flatten(data[f"cell_{f}"])) for f in ("eta", "phi", "e", "layer")]
    return [
        cluster_event(*(col[a:b] for col in flat), thresholds)
        for a, b in itertools.pairwise(offsets)
    ]


def find_jets(clusters: list[Clusters], radius: float, pt_min: float) -> ak.Array:
    """Anti-kt jets of every event at once (FastJet's multi-event interface), by pT."""
    import fastjet

    if not clusters:
        none = ak.unflatten(np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64))
        return ak.zip({f: none for f in ("pt", "eta", "phi", "m")})
    counts = np.array([len(c.e) for c in clusters], dtype=np.int64)
    cols = [np.concatenate(parts) for parts in zip(*(c.momenta() for c in clusters), strict=True)]
    vectors = ak.unflatten(ak.zip(dict(zip(("px", "py", "pz", "E"), cols, strict=True))), counts)
    sequence = fastjet.ClusterSequence(
        vectors, fastjet.JetDefinition(fastjet.antikt_algorithm, radius)
    )
    jets = sequence.inclusive_jets(pt_min)
    px, py, pz, e = (jets[f] for f in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    fields = {
        "pt": pt,
        "eta": np.arcsinh(pz / np.maximum(pt, 1e-9)),
        "phi": np.arctan2(py, px),
        "m": np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)),
    }
    order = ak.argsort(pt, axis=1, ascending=False)
    return ak.zip({name: ak.values_astype(v[order], np.float32) for name, v in fields.items()})


def missing_et(clusters: Clusters) -> tuple[float, float]:
    """Magnitude and azimuth of minus the vector sum of the clusters' transverse momenta."""
    px, py, _, _ = clusters.momenta()
    mx, my = -float(np.sum(px)), -float(np.sum(py))
    return float(np.hypot(mx, my)), float(np.arctan2(my, mx))
