"""The Monte Carlo chain on real HTEX with the real payloads, its files read back independently.

The shipped ``workflows/mc-chain.yaml`` (fewer events) runs evgen -> simul ->
reco; HepMC3 files are read with pyhepmc and ROOT files with uproot, not with
the payloads' readers. A chain over a dataset of another generator's HepMC3
files keeps that dataset's own event numbers through every step, and a file
changed under the campaign stops its resume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyhepmc
import pytest
import uproot
import yaml

from parsl_es import api
from parsl_es.campaign import shipped_campaigns
from parsl_es.errors import UserError
from parsl_es.ledger import Ledger
from tests.test_mc_payloads import foreign_event

pytestmark = pytest.mark.integration


def merged(out: Path, step: str) -> list[Path]:
    return sorted((out / step / "merged").iterdir())


def hepmc_numbers(path: Path) -> list[int]:
    with pyhepmc.open(path) as f:
        return [event.event_number for event in f]


def root_numbers(path: Path, branches: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        tree = f["events"]
        return {b: tree[b].array(library="np") for b in ("event_number", *branches)}


def test_the_shipped_chain_generates_simulates_and_reconstructs_each_event_once(
    local_session, tmp_path
):
    spec = yaml.safe_load(shipped_campaigns()["mc-chain"].read_text())
    spec["events"] = 200
    out = tmp_path / "out"
    result = api.run_campaign(spec, out, session=local_session)
    assert result.status == "complete", result.message
    expected = list(range(200))
    # evgen: HepMC3, one merged file per 100 events, every event once, in order
    evgen = [n for f in merged(out, "evgen") for n in hepmc_numbers(f)]
    assert [f.suffix for f in merged(out, "evgen")] == [".hepmc", ".hepmc"]
    assert evgen == expected
    # simul: ROOT events trees with the same numbers and real detector content
    simul = [root_numbers(f, ("calo_energy",)) for f in merged(out, "simul")]
    assert np.concatenate([s["event_number"] for s in simul]).tolist() == expected
    assert all((s["calo_energy"] > 0).all() for s in simul)
    # reco: AOD-like trees with anti-kt jets; ttbar has jets in nearly every event
    (reco_file,) = merged(out, "reco")
    with uproot.open(reco_file) as f:
        tree = f["events"]
        assert tree["event_number"].array(library="np").tolist() == expected
        n_jets = tree["n_jets"].array(library="np")
        jet_pt = tree["jet_pt"].array(library="np")
    assert (n_jets > 0).mean() > 0.9
    assert min(pt.min() for pt in jet_pt if len(pt)) >= 20.0
    # each step in its own directory, nothing of a step at the top
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"evgen", "simul", "reco", "logs"}
    for step in ("evgen", "simul", "reco"):
        assert {p.name for p in (out / step).iterdir()} == {"merged", "ranges", "validation"}
    assert set(result.per_step) == {"evgen", "simul", "reco"}
    assert all(s["events"] == 200 for s in result.per_step.values())
    # intermediate range files went once their merged files passed (keep_range_files: false)
    assert not [p for p in (out / "evgen" / "ranges").rglob("*") if p.is_file()]
    assert not [p for p in (out / "simul" / "ranges").rglob("*") if p.is_file()]
    assert [p for p in (out / "reco" / "ranges").rglob("*.root")]
    with Ledger.open(out / "ledger.sqlite", readonly=True) as ledger:
        assert all(step.campaign_passed() for _, step in ledger.steps())


def write_dataset(directory: Path, first_numbers: list[int], per_file: int) -> list[Path]:
    """Another generator's files (Z -> mu mu and hadrons, some in MeV), odd numbers."""
    directory.mkdir()
    paths = []
    for i, first in enumerate(first_numbers):
        path = directory / f"evnt.{i:03d}.hepmc"
        with pyhepmc.open(path, "w") as f:
            for k in range(per_file):
                f.write(foreign_event(first + 7 * k, scale=1.0 + k % 3, mev=k % 5 == 0))
        paths.append(path)
    return paths


def test_a_chain_over_a_dataset_keeps_its_event_numbers_and_refuses_a_changed_file(
    local_session, tmp_path
):
    files = write_dataset(tmp_path / "data", [5001, 9001, 20001], per_file=13)
    campaign = {
        "name": "overlay",
        "seed": 5,
        "chain": {
            "simul": {
                "payload": {"name": "simul"},
                "input": {"files": ["data/evnt.*.hepmc"], "format": "hepmc3"},
                "events_per_range": 5,
                "events_per_merge": 10,
            },
            "reco": {
                "payload": {"name": "reco"},
                "input": "simul",
                "events_per_range": 3,
                "events_per_merge": 6,
            },
        },
    }
    path = tmp_path / "overlay.yaml"
    path.write_text(yaml.safe_dump(campaign, sort_keys=False))
    out = tmp_path / "out"
    result = api.run_campaign(path, out, session=local_session)
    assert result.status == "complete", result.message
    expected = [first + 7 * k for first in (5001, 9001, 20001) for k in range(13)]
    for step in ("simul", "reco"):
        found = np.concatenate([root_numbers(f)["event_number"] for f in merged(out, step)])
        assert found.tolist() == expected, step
    # ranges and merges never span two input files: 13 events -> groups of 10 + 3
    assert len(merged(out, "simul")) == 6
    # a dataset file changed under the campaign: resume refuses, naming it
    with files[1].open("a") as f:
        f.write("\n")
    with pytest.raises(UserError, match=r"evnt\.001\.hepmc"):
        api.resume_campaign(out, session=local_session)
