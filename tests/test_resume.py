"""Interrupted campaigns resume with every event exactly once and nothing re-run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from parsl_es import api
from parsl_es.ledger import Ledger
from tests.helpers import assert_every_event_once, done_ranges, write_campaign

pytestmark = pytest.mark.integration


def test_graceful_stop_then_resume(local_session, tmp_path):
    out = tmp_path / "o"
    stop = threading.Event()

    def stop_at_a_third(p):
        if p.events_done >= 20:
            stop.set()

    spec = {
        "name": "stopme",
        "events": 60,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 9,
        "payload": {"name": "emulate", "seconds_per_event": 0.02},
    }
    first = api.run_campaign(
        spec, out, session=local_session, on_progress=stop_at_a_third, stop=stop
    )
    assert first.status == "stopped"
    before = done_ranges(out)
    assert 10 <= len(before) < 30
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    assert not led.summary().complete and led.summary().ranges["running"] == 0
    led.close()

    second = api.resume_campaign(out, session=local_session)
    assert second.status == "complete", second.message
    assert second.ranges_this_run == 30 - len(before)
    after = done_ranges(out)
    assert all(after[i] == n for i, n in before.items()), "a done range was re-run"
    assert_every_event_once(out, 0, 60)


def test_resume_of_a_complete_campaign_does_nothing(local_session, tmp_path):
    spec = {
        "name": "again",
        "events": 8,
        "events_per_range": 2,
        "events_per_merge": 4,
        "seed": 9,
        "payload": {"name": "emulate"},
    }
    assert api.run_campaign(spec, tmp_path / "o", session=local_session).status == "complete"
    again = api.resume_campaign(tmp_path / "o", session=local_session)
    assert again.status == "complete" and again.ranges_this_run == 0


def test_driver_killed_with_sigkill_then_resumed(local_session, tmp_path):
    """A real ``es-run submit`` killed mid-campaign, with its workers, then resumed."""
    path = write_campaign(
        tmp_path,
        "killed",
        events=150,
        events_per_range=1,
        events_per_merge=30,
        payload={"name": "emulate", "seconds_per_event": 0.05},
    )
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    es_run = Path(sys.executable).parent / "es-run"
    proc = subprocess.Popen(
        [str(es_run), "submit", str(path), "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if (out / "ledger.sqlite").exists() and len(done_ranges(out)) >= 40:
                break
            assert proc.poll() is None, "driver ended before it could be killed"
            time.sleep(0.2)
        else:
            raise AssertionError("campaign made no progress")
    finally:
        tree = [proc, *psutil.Process(proc.pid).children(recursive=True)]
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        proc.wait()
        psutil.wait_procs([p for p in tree if p.pid != proc.pid], timeout=10)

    before = done_ranges(out)
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    running = led.summary().ranges["running"]
    led.close()
    assert running > 0, "the kill should have left ranges in flight"

    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    after = done_ranges(out)
    assert all(after[i] == n for i, n in before.items()), "a done range was re-run"
    assert len(after) == 150
    assert_every_event_once(out, 0, 150)
    assert not list(out.rglob(".tmp-*"))


def test_a_deleted_merged_file_is_remade_on_resume(local_session, tmp_path):
    spec = {
        "name": "lost",
        "events": 20,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 4,
        "payload": {"name": "emulate"},
    }
    out = tmp_path / "o"
    assert api.run_campaign(spec, out, session=local_session).status == "complete"
    victim = sorted((out / "merged").glob("*.root"))[1]
    victim.unlink()
    before = done_ranges(out)
    first_report = json.loads((out / "validation" / "campaign.json").read_text())
    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert result.merges_this_run == 1 and result.ranges_this_run == 0
    assert done_ranges(out) == before  # the range files were still good: nothing re-simulated
    assert_every_event_once(out, 0, 20)
    report = json.loads((out / "validation" / "campaign.json").read_text())
    assert report["passed"] and report["validated_at"] > first_report["validated_at"]
