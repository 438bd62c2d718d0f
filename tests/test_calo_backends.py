"""GPU builds of the calorimeter: backend choice, and validation by statistics, not by hash.

torch's CPU build runs the very code a CUDA device would (same operations, same
torch generator API), so it stands in for a GPU build here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from parsl_es import api, rootio
from parsl_es.payloads import FatalPayloadError, make_payload
from parsl_es.payloads.physics.calo_backends import BACKEND_CODES, CaloBackend, select_backend
from parsl_es.ranges import EventRange, RangePlan
from parsl_es.validation import RANK_TEST_EVENTS_MIN, RANK_TEST_P_MIN, rank_test_p_value
from tests.helpers import assert_every_event_once
from tests.test_validation_power import validate

SEED = 42
#: One xdist worker runs the module: its events of both builds are simulated once.
pytestmark = pytest.mark.xdist_group("torch")
torch = pytest.importorskip("torch", reason="torch is in the test extra: pip install -e '.[test]'")


def simulate(tmp: Path, name: str, first: int, n: int, **params) -> Path:
    payload = make_payload("physics", {"process": "ttbar", **params})
    payload.setup()
    r = EventRange("t", 0, first, first + n - 1, 0, SEED)
    path = tmp / f"{name}.root"
    assert payload.simulate(r, path) == n
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("builds")
    return {
        "numpy": simulate(tmp, "numpy", 100, 12),
        "torch": simulate(tmp, "torch", 100, 12, array_library="torch", device="cpu"),
    }


def test_backend_choice_on_a_worker_without_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert select_backend("cpu", "auto").name == "numpy"
    assert select_backend("auto", "auto").name == "numpy"
    assert select_backend("cpu", "torch").name == "torch-cpu"
    assert select_backend("auto", "torch").name == "torch-cpu"
    with pytest.raises(FatalPayloadError, match="no GPU usable"):
        select_backend("gpu", "auto")
    with pytest.raises(FatalPayloadError, match="GPUs only"):
        select_backend("cpu", "cupy")
    # a worker that was given a GPU that no library can drive (this machine's fake GRES)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert select_backend("auto", "auto").name == "numpy"
    with pytest.raises(FatalPayloadError, match="CUDA_VISIBLE_DEVICES=1"):
        select_backend("gpu", "torch")


def test_gpu_build_draws_other_numbers_but_keeps_the_tracker(files):
    ref, gpu = (rootio.read_events(files[k]) for k in ("numpy", "torch"))
    assert set(ref["calo_backend"]) == {0} and set(gpu["calo_backend"]) == {1}
    for group, field in (("gen", "px"), ("gen", "pid"), ("hit", "x"), ("hit", "z")):
        assert ak.all(ref[group][field] == gpu[group][field]), (group, field)
    assert not np.array_equal(ref["calo_energy"], gpu["calo_energy"])
    # ... yet the same physics: total calorimeter energy agrees event by event within 5 %
    ratio = gpu["calo_energy"] / ref["calo_energy"]
    assert np.all(np.abs(ratio - 1) < 0.05), ratio
    assert rootio.content_hash(files["numpy"]) != rootio.content_hash(files["torch"])


def test_reference_events_are_checked_by_value(files: dict[str, Path], tmp_path: Path):
    payload = make_payload("physics", {"process": "ttbar"})
    check = payload.check_events(files["numpy"], SEED, 6)
    assert check.exact_checked == 6 and check.statistical_checked == 0 and not check.mismatched
    # one cell energy of event 100 raised by one float32 ulp: that event no longer re-derives
    cols = rootio.read_events(files["numpy"])
    energies = ak.to_list(cols["cell"].e)
    energies[0][0] = float(np.nextafter(np.float32(energies[0][0]), np.float32(np.inf)))
    cols["cell"] = ak.with_field(
        cols["cell"], ak.values_astype(ak.Array(energies), np.float32), "e"
    )
    altered = tmp_path / "altered.root"
    rootio.write_events(altered, cols)
    check = payload.check_events(altered, SEED, 12)
    assert check.mismatched == [100]


def test_gpu_events_are_checked_in_distribution(files):
    payload = make_payload("physics", {"process": "ttbar"})
    check = payload.check_events(files["torch"], SEED, 12)
    assert check.exact_checked == 0 and check.statistical_checked == 12
    assert check.builds == {"torch-cpu": 12} and not check.mismatched
    for name, counts in check.ranks.items():
        assert sum(counts) == 12
        assert rank_test_p_value(counts) > 1e-3, (name, counts)


def test_a_miscalibrated_build_fails_the_rank_test(files):
    """Compared with a reference whose shower quanta are 4x coarser, the build is caught."""
    coarse = make_payload("physics", {"process": "ttbar", "calo_quantum_gev": 0.2})
    check = coarse.check_events(files["torch"], SEED, 12)
    assert min(rank_test_p_value(c) for c in check.ranks.values()) < 1e-3, check.ranks


@pytest.mark.integration
def test_campaign_with_a_gpu_build_validates_statistically(local_session, tmp_path):
    out = tmp_path / "gpu"
    spec = {
        "name": "gpubuild",
        "events": 20,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 8,
        "payload": {"name": "physics", "process": "minbias", "array_library": "torch"},
    }
    result = api.run_campaign(spec, out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 20)
    report = result.validation
    assert report["passed"], report["problems"]
    check = report["event_check"]
    # 2 events per file would be 4, a rank test that can never reject (p >= e^-4):
    # the campaign check re-derives enough for the test to have power
    assert check["statistical_checked"] >= RANK_TEST_EVENTS_MIN and check["exact_checked"] == 0
    assert check["power"] == "sufficient" and check["topped_up_groups"]
    assert check["builds"] == {"torch-cpu": check["statistical_checked"]}
    assert all(p > RANK_TEST_P_MIN for p in check["rank_p_values"].values())
    # the same files against a reference with 4x coarser shower quanta: caught
    coarse = tmp_path / "coarse"
    shutil.copytree(out / "merged", coarse / "merged")
    plan = RangePlan("gpubuild", 20, 0, 2, 10, 8)
    rejected = validate(coarse, plan, process="minbias", calo_quantum_gev=0.2)
    assert not rejected["passed"], rejected["event_check"]
    assert any("disagree in distribution" in p for p in rejected["problems"])


def _chosen(backend: CaloBackend) -> tuple[str, str, str]:
    """Which array library, on which device, a backend computes with."""
    device = str(getattr(backend, "device", "cpu"))
    return backend.xp.__name__, device, backend.name


@pytest.mark.parametrize(
    ("device", "library", "expected"),
    [
        ("cpu", "auto", ("numpy", "cpu", "numpy")),
        ("cpu", "numpy", ("numpy", "cpu", "numpy")),
        ("auto", "numpy", ("numpy", "cpu", "numpy")),
        ("auto", "auto", ("numpy", "cpu", "numpy")),  # no GPU on this worker
        ("cpu", "torch", ("torch", "cpu", "torch-cpu")),
        ("auto", "torch", ("torch", "cpu", "torch-cpu")),
    ],
)
def test_backend_settings_choose_library_and_device(monkeypatch, device, library, expected):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    backend = select_backend(device, library)
    assert _chosen(backend) == expected
    assert backend.code == BACKEND_CODES[expected[2]]


@pytest.mark.parametrize(
    ("device", "library"), [("auto", "auto"), ("gpu", "auto"), ("gpu", "torch"), ("auto", "torch")]
)
def test_a_worker_with_a_usable_gpu_computes_on_it(monkeypatch, device, library):
    """CUDA seen by torch (faked: this machine has none): the GPU is used, not numpy."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _chosen(select_backend(device, library)) == ("torch", "cuda", "torch-cuda")
    # and device cpu keeps a torch build on the CPU, whatever the worker holds
    assert _chosen(select_backend("cpu", "torch")) == ("torch", "cpu", "torch-cpu")
