"""Remote submission through Globus Compute, with only the cloud hop replaced.

The real SDK ``Client`` registers the driver function and packs the campaign
with ``ComputeSerializer``; ``tests/globus_offline.py`` turns that into the
``Task`` messages an endpoint receives and runs them on the real
``GlobusComputeEngine``; the real ``Client`` unpacks the results.
"""

from __future__ import annotations

import json

import pytest

from parsl_es import UserError
from parsl_es.remote import RemoteCampaigns, versions
from tests.globus_offline import OfflineCloud, client_for
from tests.helpers import assert_every_event_once

pytestmark = pytest.mark.integration

CAMPAIGN = {
    "name": "remote",
    "events": 30,
    "events_per_range": 3,
    "events_per_merge": 15,
    "seed": 2,
    "payload": {"name": "emulate", "seconds_per_event": 0.01},
}


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    import tests.globus_offline

    cloud = tests.globus_offline.CURRENT = OfflineCloud(tmp_path_factory.mktemp("endpoint"))
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
