"""The evgen, simul and reco payloads on real files, read back independently.

HepMC3 files are read with pyhepmc directly and ROOT files with uproot, not with
the payloads' own readers, so a reader and writer cannot agree on a mistake.
A few ttbar events keep the file fast (the Pythia set-ups dominate).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import awkward as ak
import numpy as np
import pyhepmc
import pytest
import uproot

from parsl_es import rootio
from parsl_es.payloads import FatalPayloadError, load_payload_class, make_payload
from parsl_es.payloads.mc.clusters import Thresholds, cluster_event
from parsl_es.payloads.mc.evgen import EvgenPayload
from parsl_es.payloads.mc.reco import RecoPayload
from parsl_es.payloads.mc.simul import SimulPayload
from parsl_es.payloads.physics.detector import EM_LAYER, HAD_LAYER
from parsl_es.payloads.physics.generator import GenParticles
from parsl_es.payloads.physics.sim_output import simulate_detector
from parsl_es.ranges import EventRange

SEED = 42
#: Three evgen ranges of ttbar events 10..17.
RANGES = ((10, 12), (13, 15), (16, 17))


def make_range(first: int, last: int, input: Path | None = None, skip: int = 0) -> EventRange:
    return EventRange(
        campaign="mc",
        index=0,
        first_event=first,
        last_event=last,
        merge_group=0,
        campaign_seed=SEED,
        input=None if input is None else str(input),
        skip=skip,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mc")


@pytest.fixture(scope="module")
def evgen() -> EvgenPayload:
    p = make_payload("evgen", {"process": "ttbar", "run_number": 3})
    assert isinstance(p, EvgenPayload)
    p.setup()
    return p


@pytest.fixture(scope="module")
def evgen_files(evgen: EvgenPayload, workdir: Path) -> list[Path]:
    files = []
    for first, last in RANGES:
        out = workdir / f"evgen-{first}-{last}.hepmc"
        assert evgen.simulate(make_range(first, last), out) == last - first + 1
        files.append(out)
    return files


@pytest.fixture(scope="module")
def merged(evgen: EvgenPayload, evgen_files: list[Path], workdir: Path) -> Path:
    out = workdir / "evgen-merged.hepmc"
    assert evgen.merge(evgen_files, out) == 8
    return out


@pytest.fixture(scope="module")
def simul() -> SimulPayload:
    p = make_payload("simul", {"run_number": 3})
    assert isinstance(p, SimulPayload)
    p.setup()
    return p


def read_hepmc(path: Path) -> list[pyhepmc.GenEvent]:
    with pyhepmc.open(path) as f:
        return list(f)


# -- registration ----------------------------------------------------------------------------


def test_registered_with_formats_and_picklable(evgen: EvgenPayload, simul: SimulPayload) -> None:
    for name, suffix, reads, writes in (
        ("evgen", ".hepmc", None, "hepmc3"),
        ("simul", ".root", "hepmc3", "sim-root"),
        ("reco", ".root", "sim-root", "aod-root"),
    ):
        cls = load_payload_class(name)
        assert (cls.name, cls.suffix, cls.reads, cls.writes) == (name, suffix, reads, writes)
    # A set-up payload ships to workers without its Pythia instance or backend.
    for p in (evgen, simul):
        clone = pickle.loads(pickle.dumps(p))
        assert clone.params == p.params
        assert all(v is None for k, v in vars(clone).items() if k != "params"), vars(clone)
    with pytest.raises(FatalPayloadError, match="invalid parameters"):
        make_payload("reco", {"jet_radius": "0.4"})  # strict: no string for a number
    with pytest.raises(FatalPayloadError, match="invalid parameters"):
        make_payload("simul", {"process": "ttbar"})  # generation is evgen's
    with pytest.raises(FatalPayloadError, match="perimeter_sigma <= grow_sigma <= seed_sigma"):
        make_payload("reco", {"grow_sigma": 5.0})


# -- evgen -------------------------------------------------------------------------------------


def test_evgen_files_read_back_with_pyhepmc(evgen: EvgenPayload, evgen_files: list[Path]) -> None:
    generator = evgen._generator
    assert generator is not None
    for (first, last), path in zip(RANGES, evgen_files, strict=True):
        events = read_hepmc(path)
        assert [e.event_number for e in events] == list(range(first, last + 1))
        for e in events:
            assert e.momentum_unit == pyhepmc.Units.GEV and e.length_unit == pyhepmc.Units.MM
            status = np.array([p.status for p in e.particles])
            expected = generator.generate(SEED, e.event_number)
            assert np.count_nonzero(status == 1) == len(expected) > 100
            assert np.count_nonzero(status == 4) == 2  # the beams
            assert int(e.attributes["run_number"].astype(int)) == 3
            final = [p for p in e.particles if p.status == 1]
            assert all(p.production_vertex is not None for p in final)
            assert [p.pid for p in final] == expected.pid.tolist()
            assert np.allclose([p.momentum.px for p in final], expected.px, rtol=1e-6)
        assert evgen.event_numbers(path).tolist() == list(range(first, last + 1))


def test_evgen_merge_is_one_file_of_all_events_in_order(
    evgen: EvgenPayload, evgen_files: list[Path], merged: Path, workdir: Path
) -> None:
    text = merged.read_text()
    assert text.count("HepMC::Asciiv3-START_EVENT_LISTING") == 1
    assert text.count("HepMC::Asciiv3-END_EVENT_LISTING") == 1
    assert text.rstrip().endswith("HepMC::Asciiv3-END_EVENT_LISTING")
    events = read_hepmc(merged)
    assert [e.event_number for e in events] == list(range(10, 18))
    parts = [e for path in evgen_files for e in read_hepmc(path)]
    assert [len(e.particles) for e in events] == [len(e.particles) for e in parts]
    # Content, not layout: one range of all eight events hashes as the merged file.
    whole = workdir / "evgen-10-17.hepmc"
    evgen.simulate(make_range(10, 17), whole)
    assert evgen.content_hash(whole) == evgen.content_hash(merged)
    assert evgen.content_hash(evgen_files[0]) != evgen.content_hash(evgen_files[1])
    # Validation generates stored events again: identical with the campaign's seed only.
    check = evgen.check_events(merged, SEED, 3)
    assert (check.exact_checked, check.mismatched) == (3, [])
    assert evgen.check_events(merged, SEED + 1, 2).mismatched == [10, 17]
    # Histograms of the parts sum to those of the merged file.
    summed = [evgen.histograms(p) for p in evgen_files]
    for name, h in evgen.histograms(merged).items():
        total = sum(s[name] for s in summed[1:]) + summed[0][name]
        assert np.array_equal(total.values(), h.values()), name
    assert evgen.histograms(merged)["n_charged"].sum() == 8


# -- simul -------------------------------------------------------------------------------------

#: (pid, px, py, pz) of the stable particles of the hand-made event, GeV.
FOREIGN_FINAL = [
    (211, 5.0, 1.0, 2.0),
    (-211, -3.0, 0.5, 10.0),
    (22, 0.0, 20.0, -4.0),
    (-13, 30.0, -2.0, 15.0),
    (13, -25.0, 3.0, -30.0),
    (14, 1.0, 1.0, 1.0),
    (130, -2.0, -8.0, 3.0),
    (2212, 0.2, 4.0, 50.0),
]
MASS = {211: 0.13957, 22: 0.0, 13: 0.10566, 14: 0.0, 130: 0.49761, 2212: 0.93827}


def foreign_event(number: int, scale: float, mev: bool) -> pyhepmc.GenEvent:
    """beams -> hard vertex -> a Z (status 2) and hadrons; Z -> mu mu at a displaced vertex."""
    unit = 1000.0 if mev else 1.0
    evt = pyhepmc.GenEvent(pyhepmc.Units.MEV if mev else pyhepmc.Units.GEV, pyhepmc.Units.MM)
    evt.event_number = number

    def particle(pid: int, px: float, py: float, pz: float, status: int) -> pyhepmc.GenParticle:
        px, py, pz = px * scale, py * scale, pz * scale
        e = float(np.sqrt(px * px + py * py + pz * pz + MASS[abs(pid)] ** 2))
        return pyhepmc.GenParticle(
            pyhepmc.FourVector(px * unit, py * unit, pz * unit, e * unit), pid, status
        )

    hard = pyhepmc.GenVertex()
    for pz in (6500.0, -6500.0):
        beam = pyhepmc.GenParticle(pyhepmc.FourVector(0, 0, pz * unit, 6500.0 * unit), 2212, 4)
        hard.add_particle_in(beam)
    muons = [particle(*p, 1) for p in FOREIGN_FINAL if abs(p[0]) == 13]
    zpx, zpy, zpz = (sum(m.momentum[i] for m in muons) / unit for i in range(3))
    z = pyhepmc.GenParticle(
        pyhepmc.FourVector(zpx * unit, zpy * unit, zpz * unit, sum(m.momentum.e for m in muons)),
        23,
        2,
    )
    hard.add_particle_out(z)
    for p in FOREIGN_FINAL:
        if abs(p[0]) != 13:
            hard.add_particle_out(particle(*p, 1))
    decay = pyhepmc.GenVertex(pyhepmc.FourVector(0.01, 0.0, 0.02, 0.0))
    decay.add_particle_in(z)
    for m in muons:
        decay.add_particle_out(m)
    evt.add_vertex(hard)
    evt.add_vertex(decay)
    return evt


@pytest.fixture(scope="module")
def foreign(workdir: Path) -> Path:
    """Events 1001, 1005, ..., 1017 of 'another generator', the third one in MeV."""
    path = workdir / "foreign.hepmc3"
    with pyhepmc.open(path, "w") as f:
        for i, number in enumerate(range(1001, 1018, 4)):
            f.write(foreign_event(number, scale=1.0 + i, mev=(i == 2)))
    return path


def test_simul_reads_another_generators_file(simul: SimulPayload, foreign: Path, workdir: Path):
    out = workdir / "simul-foreign.root"
    # The range's own numbers (0..2) are not the file's: simul keeps the file's.
    assert simul.simulate(make_range(0, 2, foreign, skip=1), out) == 3
    with uproot.open(out) as f:
        tree = f["events"]
        data = tree.arrays(library="ak")
    assert data.event_number.tolist() == [1005, 1009, 1013]
    assert set(data.calo_backend.tolist()) == {0}
    stable = [p[0] for p in FOREIGN_FINAL]
    order = [p[0] for p in FOREIGN_FINAL if abs(p[0]) != 13] + [-13, 13]
    for i, scale in enumerate((2.0, 3.0, 4.0)):  # event 1009 was written in MeV
        assert sorted(data.gen_pid[i].tolist()) == sorted(stable)
        assert data.gen_pid[i].tolist() == order  # the Z (status 2) and beams are gone
        assert data.gen_charge[i].tolist() == [1, -1, 0, 0, 0, 1, 1, -1]  # ..., K_L, p, mu+, mu-
        expected_px = [p[1] * scale for p in FOREIGN_FINAL if abs(p[0]) != 13]
        assert np.allclose(data.gen_px[i].tolist()[:6], expected_px, rtol=1e-6)
        assert data.n_charged[i] == 5
        assert len(data.cell_e[i]) > 0 and data.met[i] > 0
    assert simul.event_numbers(out).tolist() == [1005, 1009, 1013]
    check = simul.check_events(out, SEED, 3)
    assert check.exact_checked == 3 and check.mismatched == []


def test_simul_is_the_physics_detector_response(simul: SimulPayload, foreign: Path, workdir: Path):
    out = workdir / "simul-one.root"
    simul.simulate(make_range(0, 0, foreign, skip=3), out)
    data = rootio.read_events(out)
    gen = data["gen"][0]
    particles = GenParticles(
        **{f: ak.to_numpy(gen[f]) for f in ("pid", "px", "py", "pz", "e", "charge")}
    )
    hits, cells = simulate_detector(simul.detector(), particles, SEED, 1013, None)
    assert np.array_equal(ak.to_numpy(data["hit"][0]["z"]), hits.z)
    assert np.array_equal(ak.to_numpy(data["cell"][0]["e"]), cells.e)
    assert np.array_equal(ak.to_numpy(data["cell"][0]["eta"]), cells.eta)
    # Another seed gives another response: the comparison above can fail.
    _, other = simulate_detector(simul.detector(), particles, SEED + 1, 1013, None)
    assert not np.array_equal(other.e, cells.e)


def test_simul_gpu_build_is_checked_in_distribution(foreign: Path, workdir: Path) -> None:
    """torch on the CPU stands in for a GPU build: recorded per event, validated statistically."""
    pytest.importorskip("torch", reason="torch is in the test extra: pip install -e '.[test]'")
    gpu = make_payload("simul", {"array_library": "torch", "device": "cpu"})
    out = workdir / "simul-torch.root"
    assert gpu.simulate(make_range(0, 4, foreign), out) == 5
    data = rootio.read_events(out, filter_name=["calo_backend", "hit"])
    assert set(data["calo_backend"].tolist()) == {1}  # torch-cpu
    check = gpu.check_events(out, SEED, 5)
    assert check.exact_checked == 0 and check.statistical_checked == 5
    assert check.mismatched == [] and check.builds == {"torch-cpu": 5}


def test_evgen_then_simul_equals_the_physics_payload(
    simul: SimulPayload, merged: Path, workdir: Path
) -> None:
    """Pythia's particles survive HepMC3 exactly: the two-step chain is the one-step payload."""
    chained = workdir / "simul-chain.root"
    simul.simulate(make_range(13, 15, merged, skip=3), chained)
    physics = make_payload("physics", {"process": "ttbar", "run_number": 3})
    direct = workdir / "physics-13-15.root"
    physics.simulate(make_range(13, 15), direct)
    assert simul.content_hash(chained) == physics.content_hash(direct)


def test_simul_refuses_bad_input(simul: SimulPayload, foreign: Path, workdir: Path) -> None:
    out = workdir / "bad.root"
    with pytest.raises(FatalPayloadError, match=r"holds 5 events; events \[3, 6\)"):
        simul.simulate(make_range(0, 2, foreign, skip=3), out)
    not_hepmc = workdir / "notes.txt"
    not_hepmc.write_text("E 1 2 3\nthis is not HepMC3\n")
    with pytest.raises(FatalPayloadError, match="not a HepMC3 ASCII file"):
        simul.simulate(make_range(0, 0, not_hepmc), out)
    not_hepmc.write_text("HepMC::Asciiv3-START_EVENT_LISTING\nE one 2 3\n")
    with pytest.raises(FatalPayloadError, match="not a HepMC3 event line: b'E one 2 3'"):
        simul.simulate(make_range(0, 0, not_hepmc), out)
    a_root_file = workdir / "numbers.root"
    rootio.write_events(a_root_file, {"event_number": np.arange(3)})
    with pytest.raises(FatalPayloadError, match="not a HepMC3 ASCII file"):
        simul.simulate(make_range(0, 0, a_root_file), out)
    with pytest.raises(FatalPayloadError, match="no input file"):
        simul.simulate(make_range(0, 0), out)
    with pytest.raises(FatalPayloadError, match="does not exist"):
        simul.simulate(make_range(0, 0, workdir / "missing.hepmc"), out)
    strict = make_payload("simul", {"check_event_numbers": True})
    with pytest.raises(FatalPayloadError, match=r"event number mismatch.*entry 2 is event 1009"):
        strict.simulate(make_range(1005, 1006, foreign, skip=1), out)
    assert strict.simulate(make_range(1005, 1005, foreign, skip=1), out) == 1


# -- reco --------------------------------------------------------------------------------------


def em_cell(ieta: int, iphi: int) -> tuple[float, float]:
    """Centre (eta, phi) of an EM cell, phi in (-pi, pi] as the detector stores it."""
    eta = -EM_LAYER.eta_max + (ieta + 0.5) * EM_LAYER.deta
    phi = (iphi + 0.5) * EM_LAYER.dphi
    return eta, phi - 2 * np.pi if phi > np.pi else phi


def shower(ieta: int, iphi: int) -> list[tuple[int, int, float]]:
    """A 3x3 patch: 40 GeV centre, 5 GeV edges, 2.5 GeV corners (70 GeV, centred)."""
    energy = {0: 40.0, 1: 5.0, 2: 2.5}
    return [
        (ieta + de, (iphi + dp) % EM_LAYER.n_phi, energy[abs(de) + abs(dp)])
        for de in (-1, 0, 1)
        for dp in (-1, 0, 1)
    ]


def cells_of(entries: list[tuple[int, int, float]]) -> dict[str, np.ndarray]:
    eta, phi = zip(*(em_cell(i, j) for i, j, _ in entries), strict=True)
    return {
        "eta": np.array(eta, dtype=np.float32),
        "phi": np.array(phi, dtype=np.float32),
        "e": np.array([e for *_, e in entries], dtype=np.float32),
        "layer": np.zeros(len(entries), dtype=np.int8),
    }


def transverse(entries: list[tuple[int, int, float]]) -> np.ndarray:
    """(px, py) summed over cells, each a massless particle at its centre."""
    c = cells_of(entries)
    pt = c["e"].astype(np.float64) / np.cosh(c["eta"].astype(np.float64))
    phi = c["phi"].astype(np.float64)
    return np.array([np.sum(pt * np.cos(phi)), np.sum(pt * np.sin(phi))])


def write_sim(path: Path, numbers: list[int], events: list[dict[str, np.ndarray]]) -> None:
    counts = [len(c["e"]) for c in events]
    flat = {f: np.concatenate([c[f] for c in events]) for f in ("eta", "phi", "e", "layer")}
    rootio.write_events(
        path,
        {
            "event_number": np.array(numbers, dtype=np.int64),
            "run_number": np.full(len(numbers), 9, dtype=np.int32),
            "cell": ak.unflatten(ak.zip(flat), counts),
        },
    )


def test_clusters_grow_merge_and_wrap_in_phi() -> None:
    t = Thresholds(noise_gev=0.03)
    last = EM_LAYER.n_phi - 1
    # Two seeds on either side of phi = pi (iphi 0 and 255) are neighbours: one cluster.
    c = cluster_event(**cells_of([(100, 0, 1.0), (100, last, 1.0)]), thresholds=t)
    assert len(c.e) == 1 and c.n_cells.tolist() == [2]
    # Two seeds with a gap between them: two clusters; a 3-sigma cell bridging it: one.
    apart = [(100, 10, 1.0), (100, 12, 2.0)]
    assert len(cluster_event(**cells_of(apart), thresholds=t).e) == 2
    bridged = cluster_event(**cells_of([*apart, (100, 11, 0.09)]), thresholds=t)
    assert len(bridged.e) == 1 and np.isclose(bridged.e[0], 3.09)
    # Rim cells: above the perimeter threshold, next to a growing cell; not grown from.
    rim = Thresholds(noise_gev=0.03, seed=4.0, grow=3.5, perimeter=1.0)
    chain = [(60, 60, 0.5), (60, 61, 0.1), (60, 62, 0.1), (60, 59, 0.02)]  # 16.7, 3.3, 3.3, 0.7
    c = cluster_event(**cells_of(chain), thresholds=rim)
    assert c.n_cells.tolist() == [2] and np.isclose(c.e[0], 0.6)
    # A ring lit all around in phi (beam remnants in the forward HAD layer) is one
    # cluster with all the energy and no transverse momentum: momenta are summed.
    ring_eta = -HAD_LAYER.eta_max + (90 + 0.5) * HAD_LAYER.deta
    phis = (np.arange(HAD_LAYER.n_phi) + 0.5) * HAD_LAYER.dphi
    ring = cluster_event(
        eta=np.full(HAD_LAYER.n_phi, ring_eta, dtype=np.float32),
        phi=np.where(phis > np.pi, phis - 2 * np.pi, phis).astype(np.float32),
        e=np.full(HAD_LAYER.n_phi, 5.0, dtype=np.float32),
        layer=np.ones(HAD_LAYER.n_phi, dtype=np.int8),
        thresholds=t,
    )
    assert ring.n_cells.tolist() == [HAD_LAYER.n_phi] and np.isclose(ring.e[0], 320.0)
    assert ring.pt[0] < 1e-3 * 320.0 / np.cosh(ring_eta)
    # A lone cell between the grow and seed thresholds makes no cluster.
    assert len(cluster_event(**cells_of([(50, 50, 0.1)]), thresholds=t).e) == 0


def test_reco_two_back_to_back_deposits(workdir: Path) -> None:
    sim = workdir / "two-showers.root"
    ieta, iphi = 148, 40
    eta0, _ = em_cell(ieta, iphi)
    event = shower(ieta, iphi) + shower(EM_LAYER.n_eta - 1 - ieta, iphi + EM_LAYER.n_phi // 2)
    noise = [(10, 200, 0.1), (30, 100, 0.105), (200, 7, 0.2)]  # 3.3, 3.5 and 6.7 sigma
    write_sim(sim, [77, 78], [cells_of(noise), cells_of(event + noise)])
    reco = make_payload("reco", {})
    out = workdir / "two-showers-aod.root"
    assert reco.simulate(make_range(0, 0, sim, skip=1), out) == 1
    with uproot.open(out) as f:
        aod = f["events"].arrays(library="ak")
    assert aod.event_number.tolist() == [78] and aod.run_number.tolist() == [9]
    assert aod.n_clusters.tolist() == [3]  # two showers and the 6.7-sigma noise cell
    assert aod.n_jets.tolist() == [2]
    expected = np.hypot(*transverse(shower(ieta, iphi)))  # a little below 70 / cosh(eta0)
    assert 0.995 < expected / (70.0 / np.cosh(eta0)) < 1.0
    assert np.allclose(aod.jet_pt[0].to_numpy(), expected, rtol=1e-4)
    assert np.allclose(np.abs(aod.jet_eta[0].to_numpy()), abs(eta0), atol=1e-4)
    dphi = abs(float(aod.jet_phi[0][0] - aod.jet_phi[0][1]))
    assert np.isclose(dphi, np.pi, atol=1e-3)
    assert aod.met[0] < 0.5  # balanced but for the noise cell
    assert reco.event_numbers(out).tolist() == [78]


def test_reco_jet_radius_and_met_direction(workdir: Path) -> None:
    """Showers 0.3 apart in eta are one R = 0.4 jet and two R = 0.2 jets; MET balances."""
    sim = workdir / "near-showers.root"
    ieta, iphi = 140, 30
    near = shower(ieta, iphi) + shower(ieta + 12, iphi)  # 12 cells of 0.025 in eta
    write_sim(sim, [1, 2], [cells_of(near), cells_of(shower(ieta, iphi))])
    wide, narrow = workdir / "near-r04.root", workdir / "near-r02.root"
    make_payload("reco", {}).simulate(make_range(1, 2, sim), wide)
    make_payload("reco", {"jet_radius": 0.2}).simulate(make_range(1, 2, sim), narrow)
    r04, r02 = rootio.read_events(wide), rootio.read_events(narrow)
    assert r04["n_jets"].tolist() == [1, 1] and r02["n_jets"].tolist() == [2, 1]
    eta = [em_cell(ieta, iphi)[0], em_cell(ieta + 12, iphi)[0]]
    pts = [np.hypot(*transverse(shower(i, iphi))) for i in (ieta, ieta + 12)]
    assert np.allclose(pts, [70.0 / np.cosh(x) for x in eta], rtol=5e-3)
    assert np.isclose(r04["jet"]["pt"][0][0], sum(pts), rtol=1e-4)
    assert np.allclose(sorted(r02["jet"]["pt"][0].to_list()), sorted(pts), rtol=1e-4)
    # One shower alone: the missing ET is its pT, pointing the other way.
    phi = em_cell(ieta, iphi)[1]
    assert np.isclose(r04["met"][1], pts[0], rtol=1e-4)
    assert np.isclose(np.cos(r04["met_phi"][1] - phi), -1.0, atol=1e-6)


def test_reco_jets_from_simulated_back_to_back_photons(simul: SimulPayload, workdir: Path):
    pt, eta = 100.0, 0.4
    p = [(pt, 0.3, eta), (pt, 0.3 - np.pi, -eta)]
    particles = GenParticles(
        pid=np.array([22, 22], dtype=np.int32),
        px=np.array([a * np.cos(b) for a, b, _ in p], dtype=np.float32),
        py=np.array([a * np.sin(b) for a, b, _ in p], dtype=np.float32),
        pz=np.array([a * np.sinh(c) for a, _, c in p], dtype=np.float32),
        e=np.array([a * np.cosh(c) for a, _, c in p], dtype=np.float32),
        charge=np.zeros(2, dtype=np.int8),
    )
    sim = workdir / "photons.root"
    rootio.write_events(sim, simul.simulate_particles(SEED, [5, 6], [particles] * 2))
    out = workdir / "photons-aod.root"
    make_payload("reco", {}).simulate(make_range(5, 6, sim), out)
    aod = rootio.read_events(out)
    assert aod["n_jets"].tolist() == [2, 2]
    jet_pt = ak.to_numpy(ak.flatten(aod["jet"]["pt"]))
    # EM resolution ~11%/sqrt(E) and 30 MeV noise per cell: a few percent at most.
    assert np.all(np.abs(jet_pt / pt - 1.0) < 0.05), jet_pt
    assert np.all(aod["met"] < 15.0)


def test_reco_refuses_bad_input(foreign: Path, workdir: Path) -> None:
    reco = make_payload("reco", {"check_event_numbers": True})
    sim = workdir / "short.root"
    write_sim(sim, [4, 5], [cells_of(shower(100, 100))] * 2)
    out = workdir / "bad-aod.root"
    with pytest.raises(FatalPayloadError, match=r"holds 2 events; entries \[1, 3\)"):
        reco.simulate(make_range(5, 6, sim, skip=1), out)
    with pytest.raises(FatalPayloadError, match="not a ROOT file"):
        reco.simulate(make_range(0, 0, foreign), out)
    with pytest.raises(FatalPayloadError, match=r"event number mismatch.*entry 0 is event 4"):
        reco.simulate(make_range(5, 5, sim), out)
    aod = workdir / "aod-only.root"
    assert reco.simulate(make_range(5, 5, sim, skip=1), aod) == 1
    with pytest.raises(FatalPayloadError, match="not a simulated events tree"):
        reco.simulate(make_range(5, 5, aod), out)


def test_ttbar_chain_evgen_simul_reco(simul: SimulPayload, merged: Path, workdir: Path) -> None:
    sim = workdir / "chain-sim.root"
    assert simul.simulate(make_range(10, 13, merged), sim) == 4
    reco = make_payload("reco", {"check_event_numbers": True})
    assert isinstance(reco, RecoPayload)
    parts = []
    for first, last, skip in ((10, 11, 0), (12, 13, 2)):
        parts.append(workdir / f"chain-aod-{first}.root")
        assert reco.simulate(make_range(first, last, sim, skip=skip), parts[-1]) == 2
    aod = workdir / "chain-aod.root"
    assert reco.merge(parts, aod) == 4
    with uproot.open(aod) as f:
        data = f["events"].arrays(library="ak")
    assert data.event_number.tolist() == [10, 11, 12, 13]
    # ttbar: two b jets and, but for the leptonic decays, light jets; 20 GeV threshold.
    assert all(n >= 2 for n in data.n_jets.tolist()), data.n_jets.tolist()
    assert ak.all(data.jet_pt >= 20.0) and ak.all(data.jet_pt[:, :-1] >= data.jet_pt[:, 1:])
    assert ak.max(data.jet_pt) > 60.0
    assert ak.all(data.n_clusters > 50)
    h = reco.histograms(aod)
    assert h["n_jets"].sum() == 4 and h["jet_pt"].sum() == ak.sum(data.n_jets)
    assert reco.content_hash(aod) != reco.content_hash(parts[0])


def test_hepmc3_scan_in_small_blocks(
    merged: Path, foreign: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks far smaller than a line, and than a file: the same numbers and offsets."""
    from parsl_es.payloads.mc import hepmc3, hepmc3_text

    whole = [hepmc3.event_offsets(p) for p in (merged, foreign)]
    monkeypatch.setattr(hepmc3_text, "CHUNK", 50)
    for path, (numbers, offsets, end) in zip((merged, foreign), whole, strict=True):
        small = hepmc3_text._scan(path)  # not the remembered scan
        assert small[0].tolist() == numbers.tolist() and small[2] == end
        assert small[1].tolist() == offsets.tolist()
    assert whole[1][0].tolist() == [1001, 1005, 1009, 1013, 1017]
    # A file of another step's events and one of no events join into one file.
    empty = workdir / "empty.hepmc"
    with hepmc3.EventWriter(empty, 6800.0):
        pass  # header and footer only
    joined = workdir / "joined.hepmc"
    assert hepmc3.concatenate([empty, foreign, empty], joined) == 5
    assert [e.event_number for e in read_hepmc(joined)] == [1001, 1005, 1009, 1013, 1017]
    # Event lines after the footer are not events of the file.
    junk = workdir / "junk.hepmc"
    junk.write_bytes(foreign.read_bytes() + b"E 99 0 0\n")
    assert hepmc3.scan_event_numbers(junk).tolist() == [1001, 1005, 1009, 1013, 1017]
    # A file rewritten in place is scanned again, not taken from the remembered scan.
    text = foreign.read_bytes()
    junk.write_bytes(text.replace(b"E 1001 ", b"E 2001 "))
    assert hepmc3.scan_event_numbers(junk).tolist() == [2001, 1005, 1009, 1013, 1017]


# -- the three steps as a chain campaign ---------------------------------------------------------


def test_a_chain_campaign_of_the_three_steps_runs_and_validates(tmp_path: Path) -> None:
    """The engine's chain on the simulated backend (no Parsl), running the payloads' code.

    Checks the formats agree at submit (evgen writes what simul reads, and so on),
    that each range's input and skip select its events (``check_event_numbers``),
    and that every step's merged files pass validation, re-derived events included.
    """
    from parsl_es.backends.simulated import SimNodeType
    from parsl_es.engine.result import RunStatus
    from tests.engine_helpers import backend, drive_chain, new_chain

    chain = {
        "evgen": {"payload": {"name": "evgen"}, "events_per_range": 6, "events_per_merge": 6},
        "simul": {
            "payload": {"name": "simul", "check_event_numbers": True},
            "input": "evgen",
            "events_per_range": 3,
            "events_per_merge": 12,
        },
        "reco": {
            "payload": {"name": "reco", "check_event_numbers": True},
            "input": "simul",
            "events_per_range": 4,
            "events_per_merge": 12,
        },
    }
    out = new_chain(tmp_path, name="mc", events=12, seed=11, chain=chain)
    sim = backend(run_functions=True, cpu=SimNodeType(workers=2, range_seconds=0.01))
    result = drive_chain(out, sim)
    assert result.status is RunStatus.COMPLETE, result.message
    assert {s: r["events"] for s, r in result.per_step.items()} == dict.fromkeys(chain, 12)
    assert all(r["validated"] for r in result.per_step.values())
    [aod] = (out / "reco" / "merged").iterdir()
    data = rootio.read_events(aod, filter_name=["event_number", "n_jets"])
    assert data["event_number"].tolist() == list(range(12))
    assert data["n_jets"].sum() >= 2 * 12
    merged_evgen = sorted((out / "evgen" / "merged").iterdir())
    assert [len(read_hepmc(p)) for p in merged_evgen] == [6, 6]
