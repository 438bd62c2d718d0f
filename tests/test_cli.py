"""``es-run``: bad input gets one line and exit 2; real campaigns through the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from parsl_es.cli.main import app
from tests.helpers import assert_every_event_once, assert_usage_error, write_campaign

runner = CliRunner()
ES_RUN = str(Path(sys.executable).parent / "es-run")


def invoke(*args: str):
    return runner.invoke(app, list(args))


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        ({"evnets": 5}, ["unknown key 'evnets'", "did you mean 'events'"]),
        ({"events": -3}, ["events:", "greater than 0"]),
        ({"events_per_merge": 7}, ["multiple of events_per_range"]),
        ({"payload": {"name": "nope"}}, ["unknown payload 'nope'", "emulate"]),
        ({"steps": {"simulate": "gpu"}}, ["steps.simulate", "node type 'gpu'", "allowed: local"]),
    ],
)
def test_bad_campaign_is_one_line_exit_2_and_writes_nothing(tmp_path, change, needles):
    path = write_campaign(tmp_path, "bad", **change)
    out = tmp_path / "out"
    result = invoke("submit", str(path), "--output", str(out))
    assert_usage_error(result, str(path.name), *needles)
    assert not out.exists()


def test_malformed_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nevents: [1, 2\n")
    result = invoke("submit", str(path), "--output", str(tmp_path / "o"))
    assert_usage_error(result, "broken.yaml", "malformed YAML")
    assert not (tmp_path / "o").exists()


def test_missing_campaign_file_and_unknown_site(tmp_path):
    assert_usage_error(
        invoke("submit", str(tmp_path / "x.yaml"), "-o", str(tmp_path / "o")), "not found"
    )
    path = write_campaign(tmp_path)
    assert_usage_error(
        invoke("submit", str(path), "-o", str(tmp_path / "o"), "--site", "locl"),
        "unknown site 'locl'",
        "did you mean 'local'",
    )
    assert not (tmp_path / "o").exists()


def test_output_directory_problems(tmp_path):
    path = write_campaign(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    assert_usage_error(invoke("submit", str(path), "-o", str(busy)), "not empty")
    assert sorted(p.name for p in busy.iterdir()) == ["something"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_usage_error(invoke("submit", str(path), "-o", str(afile / "sub")), "not a directory")


def test_status_resume_validate_of_something_that_is_not_a_campaign(tmp_path):
    for cmd in ("status", "resume", "validate"):
        assert_usage_error(invoke(cmd, str(tmp_path / "nothing")), "no such campaign")
        assert_usage_error(invoke(cmd, str(tmp_path)), "no campaign ledger")


def test_sites_lists_local():
    result = invoke("sites")
    assert result.exit_code == 0 and "local" in result.output
    shown = invoke("sites", "show", "local")
    assert yaml.safe_load(shown.output)["steps"]["simulate"] == ["local"]


@pytest.mark.integration
@pytest.mark.xdist_group("console")  # one worker runs the shared es-run campaign once
def test_submit_status_validate_through_the_console_script(console_campaign):
    """The installed ``es-run`` runs a real campaign; status and validate read it."""
    path, out, done = console_campaign  # es-run submit (with --monitoring: test_monitoring.py)
    assert done.returncode == 0, done.stderr
    assert "campaign complete" in done.stdout
    assert "30/30 events" in done.stderr  # progress lines
    assert_every_event_once(out, 0, 30)

    status = invoke("status", str(out))
    assert status.exit_code == 0
    assert "COMPLETE" in status.output and "merges validated: 2/2" in status.output
    summary = json.loads(invoke("status", str(out), "--json").output)
    assert summary["ranges"]["merged"] == 10 and summary["complete"]

    assert invoke("validate", str(out)).exit_code == 0
    again = invoke("submit", str(path), "--output", str(out))
    assert_usage_error(again, "already holds a campaign", "es-run resume")

    # damage a merged file: validate finds it and says so (exit 1)
    merged = sorted((out / "merged").glob("*.root"))[0]
    original = merged.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    merged.write_bytes(bytes(data))
    try:
        damaged = invoke("validate", str(out))
        assert damaged.exit_code == 1
        assert "checksum" in damaged.output
    finally:  # the shared campaign as it was, for the other tests that read it
        merged.write_bytes(original)
    assert invoke("validate", str(out)).exit_code == 0


@pytest.mark.integration
def test_ctrl_c_in_a_terminal_stops_gracefully_and_resume_finishes(tmp_path, local_session):
    """SIGINT to the whole foreground process group, as a terminal's Ctrl-C sends it."""
    import os
    import signal
    import time

    from parsl_es import api
    from tests.helpers import done_ranges

    path = write_campaign(
        tmp_path,
        "ctrlc",
        events=100,
        events_per_range=1,
        events_per_merge=50,
        payload={"name": "emulate", "seconds_per_event": 0.05},
    )
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [ES_RUN, "submit", str(path), "--output", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "ledger.sqlite").exists() and len(done_ranges(out)) >= 20:
            break
        time.sleep(0.2)
    live = json.loads(invoke("status", str(out), "--json").output)  # while the driver runs
    assert live["ranges"]["done"] + live["ranges"]["merged"] >= 20 and not live["complete"]
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert f"es-run resume {out}" in stderr
    before = done_ranges(out)
    assert 20 <= len(before) < 100
    status = json.loads(invoke("status", str(out), "--json").output)
    assert status["ranges"]["running"] == 0, "in-flight ranges were left running"

    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert all(done_ranges(out)[i] == n for i, n in before.items())
    assert_every_event_once(out, 0, 100)
