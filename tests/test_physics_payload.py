"""The physics payload with real Pythia and real ROOT files (a handful of events)."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from parsl_es.payloads import FatalPayloadError, PayloadError, make_payload
from parsl_es.payloads.physics import PhysicsPayload
from parsl_es.payloads.physics.generator import MAX_TRIES, PythiaGenerator
from parsl_es.ranges import EventRange, event_seed

PARAMS = {"process": "qcd", "pthat_min_gev": 50.0, "run_number": 7}
SEED = 42


def make_range(first: int, last: int, index: int = 0) -> EventRange:
    return EventRange(
        campaign="t",
        index=index,
        first_event=first,
        last_event=last,
        merge_group=0,
        campaign_seed=SEED,
    )


@pytest.fixture(scope="module")
def payload() -> PhysicsPayload:
    p = make_payload("physics", PARAMS)
    assert isinstance(p, PhysicsPayload)
    p.setup()
    return p


@pytest.fixture(scope="module")
def whole(payload: PhysicsPayload, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Events 10..13 simulated as one range."""
    path = tmp_path_factory.mktemp("whole") / "r.root"
    assert payload.simulate(make_range(10, 13), path) == 4
    return path


def test_defaults_validate() -> None:
    params = PhysicsPayload.Params()
    assert params.process == "ttbar" and params.device == "cpu"


def test_same_range_twice_is_identical(whole: Path, tmp_path: Path) -> None:
    other = make_payload("physics", PARAMS)  # a fresh Pythia instance
    path = tmp_path / "again.root"
    other.simulate(make_range(10, 13), path)
    assert other.content_hash(path) == other.content_hash(whole)


def test_cutting_does_not_change_events(
    payload: PhysicsPayload, whole: Path, tmp_path: Path
) -> None:
    first, second, merged = (tmp_path / n for n in ("a.root", "b.root", "m.root"))
    # The later range first: an event must not depend on what was generated before it.
    payload.simulate(make_range(12, 13, index=1), second)
    payload.simulate(make_range(10, 11), first)
    assert payload.merge([first, second], merged) == 4
    assert list(payload.event_numbers(merged)) == [10, 11, 12, 13]
    assert payload.content_hash(merged) == payload.content_hash(whole)


def test_bad_pythia_setting_is_fatal() -> None:
    bad = make_payload("physics", {**PARAMS, "pythia_settings": ["NoSuch:thing = on"]})
    with pytest.raises(FatalPayloadError, match="NoSuch:thing"):
        bad.setup()


@pytest.mark.parametrize(
    "params",
    [{"device": "tpu"}, {"device": "gpu", "array_library": "numpy"}, {"colour": "red"}],
)
def test_invalid_parameters_are_fatal(params: dict) -> None:
    with pytest.raises(FatalPayloadError):
        make_payload("physics", params)


def test_output_tree(payload: PhysicsPayload, whole: Path) -> None:
    with uproot.open(whole) as f:
        tree = f["events"]
        names = set(tree.keys())
        data = tree.arrays(library="np")
    expected = {"event_number", "run_number", "n_charged", "calo_energy", "met"}
    expected |= {"ngen", "nhit", "ncell", "gen_pid", "gen_px", "gen_charge", "hit_x", "hit_z"}
    expected |= {"hit_layer", "hit_particle", "cell_eta", "cell_phi", "cell_e", "cell_layer"}
    assert expected <= names
    assert list(payload.event_numbers(whole)) == [10, 11, 12, 13]
    assert (data["run_number"] == 7).all()
    assert (data["calo_energy"] > 0).all()
    assert (data["n_charged"] > 0).all() and (data["nhit"] > 0).all()
    for layers, particles, n_gen in zip(
        data["hit_layer"], data["hit_particle"], data["ngen"], strict=True
    ):
        assert layers.min() >= 0 and layers.max() < 8
        assert particles.min() >= 0 and particles.max() < n_gen
    for cell_layer, cell_eta in zip(data["cell_layer"], data["cell_eta"], strict=True):
        assert set(np.unique(cell_layer)) <= {0, 1}
        assert np.abs(cell_eta).max() < 4.9


def test_histograms_have_entries(payload: PhysicsPayload, whole: Path) -> None:
    hists = payload.histograms(whole)
    assert {"calo_energy", "gen_charged_pt", "n_charged", "n_hits", "cell_energy"} <= set(hists)
    assert hists["calo_energy"].sum(flow=True) == 4
    for name, h in hists.items():
        assert h.sum() > 0, name


class _FailingPythia:
    """Stands in for Pythia when next() always fails: nextBatch gives an empty batch."""

    def __init__(self) -> None:
        self.seeds: list[int] = []
        self.rndm = self

    def init(self, seed: int) -> None:
        self.seeds.append(seed)

    def nextBatch(self, n: int, error_mode: str) -> ak.Array:
        return ak.Array([])


def test_failed_event_retries_with_derived_seeds() -> None:
    generator = PythiaGenerator.__new__(PythiaGenerator)
    generator._pythia = _FailingPythia()
    with pytest.raises(PayloadError, match="event 5"):
        generator.generate(SEED, 5)
    seeds = generator._pythia.seeds
    assert len(seeds) == MAX_TRIES and len(set(seeds)) == MAX_TRIES
    assert seeds[0] == event_seed(SEED, 5)
    generator._pythia.seeds = []
    with pytest.raises(PayloadError):
        generator.generate(SEED, 5)
    assert generator._pythia.seeds == seeds
