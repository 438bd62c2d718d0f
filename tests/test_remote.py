"""Globus Compute, both uses, with only the cloud's hops replaced (``tests/globus_offline.py``).

Remote submission: the real SDK ``Client`` registers the driver function and
packs the campaign with ``ComputeSerializer``; the offline service turns that
into the ``Task`` messages an endpoint receives and runs them on the real
``GlobusComputeEngine``; the real ``Client`` unpacks the results.

A step on an endpoint: a site's node type of kind ``globus-compute`` is Parsl's
``GlobusComputeExecutor`` around the real SDK ``Executor``; the engine's tasks go
through its submission thread to the offline service, run on the same endpoint
engine, and their results come back through the SDK's AMQP result watcher.
"""

from __future__ import annotations

import json
import threading

import pytest

from parsl_es import UserError, api
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.remote import RemoteCampaigns, versions
from parsl_es.sites import SiteSpec
from tests.globus_offline import OfflineCloud, client_for
from tests.helpers import assert_every_event_once

# one xdist worker runs them all: one offline cloud and endpoint engine, not one per worker
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("globus")]

CAMPAIGN = {
    "name": "remote",
    "events": 30,
    "events_per_range": 3,
    "events_per_merge": 15,
    "seed": 2,
    "payload": {"name": "emulate", "seconds_per_event": 0.01},
}


#: Workers of the endpoint's engine (and of the node type that uses it).
ENDPOINT_WORKERS = 2


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    import tests.globus_offline

    cloud = tests.globus_offline.CURRENT = OfflineCloud(
        tmp_path_factory.mktemp("endpoint"), workers=ENDPOINT_WORKERS
    )
    cloud.wait_for_workers()
    yield cloud
    tests.globus_offline.CURRENT = None
    cloud.close()


def wait_done(remote: RemoteCampaigns, task_id: str, timeout: float = 300) -> dict:
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = remote.status(task_id)
        if not status["pending"]:
            return status
        time.sleep(0.5)
    raise AssertionError("remote campaign did not finish")


def test_campaign_runs_on_the_endpoint_and_its_summary_comes_back(cloud, tmp_path):
    remote = RemoteCampaigns(client_for(cloud))
    out = tmp_path / "on-the-endpoint"
    task_id = remote.submit(CAMPAIGN, cloud.endpoint_id, str(out), site="local")
    assert wait_done(remote, task_id)["status"] == "success"
    summary = remote.fetch(task_id, tmp_path / "fetched")
    assert summary["result"]["status"] == "complete"
    assert summary["summary"]["events_merged"] == 30
    assert_every_event_once(out, 0, 30)  # written on the endpoint's file system
    fetched = tmp_path / "fetched"
    assert json.loads((fetched / "jobReport.json").read_text())["events_merged"] == 30
    assert (fetched / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_endpoint_and_bad_login_get_clear_messages(cloud, tmp_path):
    remote = RemoteCampaigns(client_for(cloud))
    with pytest.raises(UserError, match="knows no"):
        remote.submit(CAMPAIGN, "00000000-0000-0000-0000-000000000000", str(tmp_path / "x"))
    cloud.authorised = False
    try:
        with pytest.raises(UserError, match=r"Globus authentication failed.*login"):
            remote.submit(CAMPAIGN, cloud.endpoint_id, str(tmp_path / "y"))
    finally:
        cloud.authorised = True


def test_version_mismatch_is_reported_from_the_endpoint(cloud, tmp_path, monkeypatch):
    import parsl_es.remote

    monkeypatch.setattr(
        parsl_es.remote,
        "versions",
        lambda: {**versions(), "parsl_es": "0.0.1"},
    )
    remote = RemoteCampaigns(client_for(cloud))
    task_id = remote.submit(CAMPAIGN, cloud.endpoint_id, str(tmp_path / "z"))
    status = wait_done(remote, task_id)
    assert status["status"] == "failed"
    assert "install the same versions on both sides" in status["error"]
    with pytest.raises(UserError, match="remote campaign failed"):
        remote.fetch(task_id, tmp_path / "nothing")
    assert not (tmp_path / "z").exists()


def test_cli_submit_status_fetch_through_an_endpoint(cloud, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from parsl_es.cli.main import app
    from tests.helpers import write_campaign

    monkeypatch.setenv("PARSL_ES_COMPUTE_CLIENT", "tests.globus_offline:cli_client")
    runner = CliRunner()
    path = write_campaign(tmp_path, "viacli", events=12, events_per_range=3, events_per_merge=6)
    out = tmp_path / "remote-out"
    sent = runner.invoke(
        app, ["submit", str(path), "--endpoint", cloud.endpoint_id, "-o", str(out)]
    )
    assert sent.exit_code == 0, sent.output
    task = sent.output.split("task ", 1)[1].split()[0]
    assert f"es-run fetch {task}" in sent.output
    remote = RemoteCampaigns(client_for(cloud))
    wait_done(remote, task)
    state = runner.invoke(app, ["status", task, "--endpoint"])
    assert state.exit_code == 0 and f"task {task}: success" in state.output
    got = runner.invoke(app, ["fetch", task, "--to", str(tmp_path / "back")])
    assert got.exit_code == 0, got.output
    assert "campaign complete" in got.output
    assert (tmp_path / "back" / "summary.json").is_file()
    assert_every_event_once(out, 0, 12)
    unknown = runner.invoke(app, ["fetch", "00000000-0000-0000-0000-000000000001"])
    assert unknown.exit_code == 2 and "knows no" in unknown.output


# --- a step on an endpoint ------------------------------------------------------------------


def endpoint_site(cloud: OfflineCloud, with_local: bool = True) -> SiteSpec:
    """Simulate and merge on the endpoint, validate on the driver's own HTEX (or there too)."""
    endpoint = {
        "provider": {
            "kind": "globus-compute",
            "endpoint_id": cloud.endpoint_id,
            "workers": ENDPOINT_WORKERS,
        }
    }
    local = {"provider": {"kind": "local"}, "workers_per_node": 1}
    return SiteSpec.model_validate(
        {
            "name": "with-endpoint",
            "node_types": {"local": local, "endpoint": endpoint}
            if with_local
            else {"endpoint": endpoint},
            "steps": {
                "simulate": ["endpoint"],
                "merge": "endpoint",
                "validate": "local" if with_local else "endpoint",
            },
        }
    )


def test_a_campaign_simulates_and_merges_on_an_endpoint_node_type(cloud, tmp_path, monkeypatch):
    monkeypatch.setenv("PARSL_ES_COMPUTE_CLIENT", "tests.globus_offline:cli_client")
    monkeypatch.chdir(tmp_path)  # a relative output, as `es-run submit ... -o out` gives
    before, acknowledged = dict(cloud.submitted), cloud.broker.acknowledged
    campaign = {
        "name": "step",
        "events": 16,
        "events_per_range": 2,
        "events_per_merge": 8,
        "seed": 5,
        "payload": {"name": "emulate", "seconds_per_event": 0.01},
    }
    stop = threading.Event()  # a campaign that cannot finish stops, not hangs
    deadline = threading.Timer(120, stop.set)
    deadline.start()
    try:
        result = api.run_campaign(campaign, "out", site=endpoint_site(cloud), stop=stop)
    finally:
        deadline.cancel()
    assert result.status == "complete", result.message
    out = tmp_path / "out"
    assert_every_event_once(out, 0, 16)  # read from the merged files, not the ledger
    assert not (cloud.working_dir / "out").exists()  # nothing written beside the endpoint
    led = Ledger.open(out / LEDGER_NAME, readonly=True)
    try:
        summary = led.summary()
        assert summary.complete and summary.ranges["merged"] == 8
        assert set(summary.by_node_type) == {"endpoint"}
        assert all(r.node_type == "endpoint" and r.attempts == 1 for r in led.ranges())
        assert {m.node_type for m in led.merge_records()} == {"endpoint"}
        tasks = led.tasks()
    finally:
        led.close()
    # where the workers said they ran: the endpoint engine's own worker pool
    assert {t.pool for t in tasks} == cloud.worker_pools()
    ran = {name: n - before.get(name, 0) for name, n in cloud.submitted.items()}
    assert {k: v for k, v in ran.items() if v} == {
        "simulate_ranges": len(tasks),
        "merge_group": 2,
    }
    # every result came back through the AMQP result queue (the SDK Executor's only way)
    assert cloud.broker.acknowledged - acknowledged == len(tasks) + 2


def test_a_worker_the_endpoint_loses_is_lost_work_not_a_failure(cloud, tmp_path, monkeypatch):
    from parsl.app.app import python_app

    from parsl_es.backends.parsl import ParslBackend

    monkeypatch.setenv("PARSL_ES_COMPUTE_CLIENT", "tests.globus_offline:cli_client")

    def lose_the_worker():
        import os

        os._exit(9)

    def fail():
        raise ValueError("the payload's own error")

    cloud.wait_for_workers()
    with ParslBackend(endpoint_site(cloud, with_local=False), tmp_path / "run") as backend:
        lost, failed = (
            python_app(f, executors=["endpoint"], data_flow_kernel=backend.dfk)()
            for f in (lose_the_worker, fail)
        )
        try:
            lost_exc, failed_exc = lost.exception(timeout=60), failed.exception(timeout=60)
        except TimeoutError:
            # Failed in 3 CI runs on 2026-11-30, right after the campaign test: the last
            # backend's result watcher still consumed from the shared task group's queue
            # (see the next test). Say where the results stopped, should it come back.
            raise AssertionError(f"no result in 60 s: {cloud.describe()}") from None
    assert "WorkerLost" in str(lost_exc)
    assert backend.lost(lost_exc)  # redone at no cost of an attempt
    assert isinstance(failed_exc, ValueError) and not backend.lost(failed_exc)


def test_a_closed_backend_leaves_no_result_watcher_on_its_task_group(cloud, tmp_path, monkeypatch):
    """The SDK shares one task group, hence one result queue, among all Executors of a
    process. A watcher still consuming after its backend closed takes results meant for
    the next backend's futures (a campaign after another in one notebook kernel hangs);
    and its own late shutdown unregisters the next backend's watcher, so a second one
    starts on the same queue. Closing a backend therefore waits for its watchers."""
    from parsl.app.app import python_app

    from parsl_es.backends.parsl import ParslBackend

    monkeypatch.setenv("PARSL_ES_COMPUTE_CLIENT", "tests.globus_offline:cli_client")

    def answer():
        return 42

    cloud.wait_for_workers()
    for run in range(2):  # the second run starts while the first one's watcher may linger
        with ParslBackend(endpoint_site(cloud, with_local=False), tmp_path / f"run{run}") as b:
            got = [python_app(answer, executors=["endpoint"], data_flow_kernel=b.dfk)()]
            got.append(python_app(answer, executors=["endpoint"], data_flow_kernel=b.dfk)())
            assert [f.result(timeout=60) for f in got] == [42, 42], cloud.describe()
        assert cloud.broker.consumers() == {}, cloud.describe()
