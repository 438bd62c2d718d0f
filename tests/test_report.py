"""The campaign report: pictures from the ledger, provenance, and a real browser loading it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from parsl_es import api, fileio
from parsl_es.cli.main import app
from parsl_es.report import build_report
from tests.test_seed_rule import check_seeds_section

pytestmark = pytest.mark.integration

runner = CliRunner()
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def campaign(local_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "out"
    spec = {
        "name": "reported",
        "events": 60,
        "events_per_range": 2,
        "events_per_merge": 20,
        "seed": 3,
        "payload": {"name": "emulate", "seconds_per_event": 0.01, "fail_events": [25]},
    }
    assert api.run_campaign(spec, out, session=local_session).status == "complete"
    return out


def test_report_page_pictures_and_job_report(campaign):
    page = build_report(campaign)
    assert page == campaign / "report" / "index.html"
    text = page.read_text()
    for png in ("timeline.png", "throughput.png", "durations.png", "failures.png"):
        assert (page.parent / png).stat().st_size > 2000, png
        assert f'src="{png}"' in text
    assert 'src="physics-physics.png"' in text  # the validation's histograms
    assert "injected failure" in text  # the failed attempt is listed
    jr = json.loads((page.parent / "jobReport.json").read_text())
    assert jr["campaign"]["name"] == "reported" and jr["seeds"]["campaign"] == 3
    check_seeds_section(jr["seeds"])  # the stated rule recomputes the code's seeds
    assert jr["events_merged"] == 60 and len(jr["outputs"]) == 3
    for o in jr["outputs"]:
        assert fileio.adler32(campaign / o["file"]) == o["adler32"]
    assert jr["validation"]["passed"] and jr["validation"]["events_duplicated"] == 0
    assert {"python", "parsl", "parsl-es"} <= set(jr["software"])
    assert jr["runs"] and jr["runs"][0]["status"] == "complete"


def test_cli_report(campaign, tmp_path):
    done = runner.invoke(app, ["report", str(campaign), "--to", str(tmp_path / "r")])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "r" / "index.html").is_file()
    bad = runner.invoke(app, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "no campaign ledger" in bad.output


def test_report_loads_in_a_real_browser(campaign, tmp_path):
    """Headless Chromium opens the page: no script errors, every image decoded."""
    if BROWSER is None:
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    page = build_report(campaign)
    done = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    body = re.search(r'<body data-images="(\d+)" data-loaded="(\d+)"', done.stdout)
    assert body, done.stdout[:2000]
    images, loaded = int(body.group(1)), int(body.group(2))
    assert images >= 5 and loaded == images, (images, loaded)
    assert "Uncaught" not in done.stderr, done.stderr
