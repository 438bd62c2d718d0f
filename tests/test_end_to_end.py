"""Campaigns through a real HTEX on loopback, checked by reading the ROOT files back."""

from __future__ import annotations

import json
import sys

import pytest
import uproot

from parsl_es import api
from parsl_es.ledger import Ledger
from parsl_es.payloads import make_payload
from parsl_es.rootio import content_hash
from parsl_es.states import RangeState
from tests.helpers import assert_every_event_once, merged_event_numbers

pytestmark = pytest.mark.integration


def campaign(name: str, **fields) -> dict:
    data = {
        "name": name,
        "events": 45,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 5,
        "payload": {"name": "emulate"},
    }
    data.update(fields)
    return data


@pytest.fixture(scope="module")
def finished(local_session, tmp_path_factory):
    output = tmp_path_factory.mktemp("e2e") / "out"
    seen = []
    result = api.run_campaign(
        campaign("e2e", first_event=1000, payload={"name": "emulate", "seconds_per_event": 0.01}),
        output,
        session=local_session,
        on_progress=seen.append,
    )
    return result, output, seen


def test_campaign_completes_with_every_event_exactly_once(finished):
    result, output, _ = finished
    assert result.status == "complete", result.message
    assert result.ranges_this_run == 23 and result.merges_this_run == 5
    assert_every_event_once(output, 1000, 45)
    # the last range (1 event) and the last merge group (5 events) are shorter
    assert [len(n) for n in merged_event_numbers(output)] == [10, 10, 10, 10, 5]


def test_ledger_says_every_range_merged_and_every_merge_validated(finished):
    _, output, _ = finished
    led = Ledger.open(output / "ledger.sqlite", readonly=True)
    try:
        s = led.summary()
        assert s.ranges["merged"] == 23 and s.merges["done"] == 5
        assert s.validated["passed"] == 5 and s.campaign_validation == "passed"
        assert s.complete
        for row in led.ranges():
            path = output / row.output
            assert path.stat().st_size == row.size and row.n_events in (1, 2)
            assert row.host and row.worker and row.node_type == "local"
    finally:
        led.close()


def test_output_layout_and_validation_report(finished):
    _, output, _ = finished
    for sub in ("ranges", "merged", "validation", "logs"):
        assert (output / sub).is_dir()
    report = json.loads((output / "validation" / "campaign.json").read_text())
    assert report["passed"] and report["events_found"] == 45
    assert report["events_missing"] == 0 and report["events_duplicated"] == 0
    assert (output / "validation" / "physics.png").stat().st_size > 1000
    assert (output / "logs" / "driver.log").is_file()
    assert not list(output.rglob(".tmp-*"))


def test_pull_window_is_bounded_and_merges_start_during_simulation(finished, local_session):
    _, output, seen = finished
    workers = local_session.site.node_types["local"].workers()
    # a bounded window of tasks (bundles), never the whole campaign at once
    assert max(s.tasks_in_flight for s in seen) <= 2 * workers
    assert max(s.ranges_in_flight for s in seen) < 23
    led = Ledger.open(output / "ledger.sqlite", readonly=True)
    try:
        first_merge = min(m.started for m in led.merge_records())
        last_range = max(r.finished for r in led.ranges())
    finally:
        led.close()
    assert first_merge < last_range, "merges waited for the whole campaign"


def test_failed_range_is_retried_without_failing_its_group(local_session, tmp_path):
    payload = {"name": "emulate", "fail_events": [7, 30], "fail_times": 1}
    result = api.run_campaign(
        campaign("retry", payload=payload), tmp_path / "o", session=local_session
    )
    assert result.status == "complete" and result.failures == 2
    assert_every_event_once(tmp_path / "o", 0, 45)
    led = Ledger.open(tmp_path / "o" / "ledger.sqlite", readonly=True)
    try:
        rows = {r.id: r for r in led.ranges()}
        assert rows["retry-6-7"].attempts == 2 and rows["retry-6-7"].failures == 1
        assert rows["retry-6-7"].state == "merged"
        outcomes = [a.outcome for a in led.attempts(index=3)]
        assert outcomes == ["failed"]  # and the range row says done
    finally:
        led.close()


def test_range_out_of_attempts_is_fatal_and_reported(local_session, tmp_path):
    payload = {"name": "emulate", "fail_events": [12], "fail_times": 10}
    result = api.run_campaign(
        campaign("fatal", payload=payload, attempts=2), tmp_path / "o", session=local_session
    )
    assert result.status == "failed"
    assert result.fatal_ranges == ["fatal-12-13"]
    assert "1 ranges fatal" in result.message
    led = Ledger.open(tmp_path / "o" / "ledger.sqlite", readonly=True)
    try:
        s = led.summary()
        assert s.ranges["fatal"] == 1
        assert s.merges["done"] == 4 and s.merges["waiting"] == 1  # only group 1 is held
        assert "injected failure" in next(led.ranges([RangeState.FATAL])).error
    finally:
        led.close()


def test_physics_campaign_warm_workers_and_reproducible_ranges(local_session, tmp_path):
    payload = {"name": "physics", "process": "minbias"}
    out = tmp_path / "phys"
    result = api.run_campaign(
        campaign("phys", events=24, events_per_range=3, events_per_merge=12, payload=payload),
        out,
        session=local_session,
    )
    assert result.status == "complete", result.message
    # payload state is initialised once per worker process, not once per range
    assert result.payload_inits <= result.workers < result.ranges_this_run
    assert_every_event_once(out, 0, 24)
    with uproot.open(sorted((out / "merged").glob("*.root"))[0]) as f:
        keys = set(f["events"].keys())
    assert {"event_number", "run_number", "gen_px", "hit_x", "cell_e", "calo_energy"} <= keys
    # a range gives the same events whichever worker ran it: redo one here, in this process
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    try:
        row = next(led.ranges())
        r = led.plan.range(row.index)
    finally:
        led.close()
    local = make_payload("physics", {"process": "minbias"})
    local.setup()
    local.simulate(r, tmp_path / "again.root")
    assert content_hash(tmp_path / "again.root") == content_hash(out / row.output)


def test_command_payload_campaign_through_an_external_program(local_session, tmp_path):
    """Simulate and merge run as separate processes (the physics payload's own CLI)."""
    physics = f"{sys.executable} -m parsl_es.payloads.physics"
    payload = {
        "name": "command",
        "simulate": f"{physics} simulate --process minbias --first-event {{first_event}} "
        "--n-events {n_events} --campaign-seed {campaign_seed} --output {output} "
        "--job-report jobReport.json",
        "merge": f"{physics} merge --inputs-file {{inputs_file}} --output {{output}} "
        "--job-report jobReport.json",
        "job_report": "jobReport.json",
    }
    out = tmp_path / "cmd"
    spec = campaign("cmd", events=6, events_per_range=3, events_per_merge=6, payload=payload)
    result = api.run_campaign(spec, out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 6)
    logs = sorted((out / "ranges").rglob("*.log"))
    assert len(logs) == 2 and "exit code 0" in logs[0].read_text()
    # the same events as the in-process physics payload gives for this campaign seed
    local = make_payload("physics", {"process": "minbias"})
    local.setup()
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    try:
        row = next(led.ranges())
        r = led.plan.range(row.index)
    finally:
        led.close()
    local.simulate(r, tmp_path / "same.root")
    assert content_hash(tmp_path / "same.root") == content_hash(out / row.output)
