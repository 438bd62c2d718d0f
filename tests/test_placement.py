"""Heterogeneous placement of a chain on the simulated backend: per-step speeds, preferences."""

from __future__ import annotations

import pytest

from benchmarks.placement import CPU, GPU, PLACEMENTS, run_simulated
from parsl_es.backends.simulated import SimNodeType
from parsl_es.engine.result import RunStatus
from parsl_es.ledger import LEDGER_NAME, Ledger
from tests.engine_helpers import backend, drive_chain, new_chain


def test_a_step_speedup_makes_that_steps_ranges_faster_on_that_node_type(tmp_path):
    out = new_chain(tmp_path)
    sim = backend(
        cpu=SimNodeType(workers=4, range_seconds=1.0, step_speedup={"sim": 4.0, "rec": 0.5}),
        gpu=SimNodeType(workers=4, range_seconds=1.0, step_speedup={"sim": 10.0}),
    )
    result = drive_chain(out, sim)
    assert result.status is RunStatus.COMPLETE, result.message
    seen: dict[tuple[str, str | None], set[float]] = {}
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        for name, step in ledger.steps():
            for r in step.ranges():
                assert r.started is not None and r.finished is not None
                key = (name, r.node_type)
                seen.setdefault(key, set()).add(round(r.finished - r.started, 6))
    assert seen == {
        ("gen", CPU): {1.0},
        ("gen", GPU): {1.0},
        ("sim", CPU): {0.25},
        ("sim", GPU): {0.1},
        ("rec", CPU): {2.0},
        ("rec", GPU): {1.0},
    }


def test_a_step_speedup_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        SimNodeType(step_speedup={"sim": 0.0})


SMALL = {"events": 2000, "cpu_workers": 32, "gpu_workers": 16}


def test_each_step_on_its_preferred_node_type_beats_every_step_everywhere(tmp_path):
    naive = run_simulated(tmp_path / "naive", PLACEMENTS["naive"], **SMALL)
    preferred = run_simulated(tmp_path / "preferred", PLACEMENTS["preferred"], **SMALL)
    # (0.8 until merges went ahead of queued ranges, which sped the naive placement up 7 %)
    assert preferred["wall_s"] < 0.85 * naive["wall_s"], (preferred, naive)
    assert preferred["steps"]["simul"]["share"] == {GPU: 1.0}
    assert preferred["steps"]["gen"]["share"] == preferred["steps"]["reco"]["share"] == {CPU: 1.0}
    # naive: simul runs on both (mostly on the gpu, where it is faster), gen too
    assert (
        set(naive["steps"]["simul"]["share"]) == set(naive["steps"]["gen"]["share"]) == {CPU, GPU}
    )
    assert naive["steps"]["simul"]["share"][GPU] > 0.5


def test_simul_listing_gpu_first_runs_mostly_on_the_gpu(tmp_path):
    overflow = run_simulated(tmp_path / "o", PLACEMENTS["preferred+overflow"], **SMALL)
    share = overflow["steps"]["simul"]["share"]
    assert share[GPU] > 0.5 and share.get(CPU, 0.0) > 0.0, share
