"""Chain campaigns in the engine, on the simulated backend: streaming, priority, resume."""

from __future__ import annotations

from parsl_es.backends.simulated import SimNodeType
from parsl_es.engine.result import RunStatus
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.states import RangeState
from tests.engine_helpers import backend, drive_chain, new_chain

STEPS = ("gen", "sim", "rec")


def _ranges(out):
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        return {name: list(step.ranges()) for name, step in ledger.steps()}


def test_a_chain_runs_every_step_exactly_once_and_validates_each(tmp_path):
    out = new_chain(tmp_path)
    result = drive_chain(out, backend())
    assert result.status is RunStatus.COMPLETE, result.message
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        assert [name for name, _ in ledger.steps()] == list(STEPS)
        for name, step in ledger.steps():
            plan = step.plan
            rows = list(step.ranges())
            assert [r.index for r in rows] == list(range(plan.n_ranges)), name
            assert {r.state for r in rows} == {RangeState.MERGED}
            assert all(r.attempts == 1 for r in rows)
            assert step.campaign_passed(), name
            merges = step.merge_records()
            assert len(merges) == plan.n_merges and all(m.output for m in merges)
            assert all(m.output.startswith("merged/") for m in merges)
            assert (out / name / merges[0].output).is_file()
    assert set(result.per_step) == set(STEPS)
    assert all(s["events"] == 200 for s in result.per_step.values())


def test_downstream_steps_start_while_upstream_goes_on_and_are_preferred(tmp_path):
    out = new_chain(tmp_path, events=1000)
    drive_chain(out, backend(cpu=SimNodeType(workers=4, range_seconds=1.0)))
    rows = _ranges(out)
    gen_last_start = max(r.started for r in rows["gen"])
    sim_first_start = min(r.started for r in rows["sim"])
    rec_first_start = min(r.started for r in rows["rec"])
    # streaming: simulation starts on the first validated generator file, long before
    # generation is over, and reconstruction before simulation is over
    assert sim_first_start < gen_last_start
    assert rec_first_start < max(r.started for r in rows["sim"])
    # priority: once simulation can run, the shared workers go to it first, so
    # generation does not race ahead: few generator files wait unread at any time
    started_gen_after = [r for r in rows["gen"] if r.started > sim_first_start]
    assert started_gen_after, "generation should still be going on"


def test_a_chain_stopped_in_the_middle_resumes_each_step_exactly_once(tmp_path):
    import threading

    out = new_chain(tmp_path)
    stop = threading.Event()

    def stop_once_rec_started(progress):
        rec = [p for p in progress.steps if p.step == "rec"]
        if rec and rec[0].ranges_done > 0:
            stop.set()

    first = drive_chain(
        out, backend(run_functions=True), stop=stop, on_progress=stop_once_rec_started
    )
    assert first.status is RunStatus.STOPPED
    rows = _ranges(out)
    assert 0 < len([r for r in rows["rec"] if r.state is not RangeState.READY]) < 40
    second = drive_chain(out, backend(run_functions=True))
    assert second.status is RunStatus.COMPLETE, second.message
    for name, step_rows in _ranges(out).items():
        assert {r.state for r in step_rows} == {RangeState.MERGED}, name
    assert (
        sum(s["events"] for s in first.per_step.values())
        + sum(s["events"] for s in second.per_step.values())
        == 3 * 200
    )


def test_a_node_type_goes_first_to_the_steps_that_prefer_it(tmp_path):
    """sim prefers gpu and may use cpu; gen and rec have only cpu: while they have
    ranges ready, the cpu workers are theirs, and sim takes cpu only when they wait."""
    out = new_chain(tmp_path, events=1000)
    sim = backend(
        cpu=SimNodeType(workers=4, range_seconds=1.0),
        gpu=SimNodeType(workers=2, range_seconds=1.0),
    )
    result = drive_chain(out, sim, {"gen": ["cpu"], "sim": ["gpu", "cpu"], "rec": ["cpu"]})
    assert result.status is RunStatus.COMPLETE, result.message
    rows = _ranges(out)
    gen_starts = sorted(r.started for r in rows["gen"])
    sim_on_cpu = sorted(r.started for r in rows["sim"] if r.node_type == "cpu")
    sim_on_gpu = [r for r in rows["sim"] if r.node_type == "gpu"]
    assert {r.node_type for r in rows["gen"]} == {"cpu"}
    assert sim_on_gpu and sim_on_cpu, "sim ran on both"
    # no sim range took a cpu worker while most of generation was still to start
    assert sim_on_cpu[0] >= gen_starts[int(0.9 * len(gen_starts))]
