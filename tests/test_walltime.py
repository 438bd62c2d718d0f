"""The walltime cut-off: stop starting what cannot finish, leave nothing half-done."""

from __future__ import annotations

import time

import pytest

from parsl_es import api
from parsl_es.allocation import allocation_end, parse_end
from parsl_es.errors import UserError
from parsl_es.ledger import Ledger
from parsl_es.states import RangeState
from tests.helpers import assert_every_event_once, done_ranges


def test_allocation_end_sources(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_JOB_END_TIME", raising=False)
    assert allocation_end(now=100.0) == (None, "no allocation end known")
    assert allocation_end(walltime="00:10:00", now=100.0) == (700.0, "--walltime")
    assert allocation_end(walltime="1-00:00:01", now=0.0)[0] == 86401.0
    monkeypatch.setenv("SLURM_JOB_END_TIME", "5000")
    assert allocation_end(now=100.0) == (5000.0, "SLURM_JOB_END_TIME")
    assert allocation_end(end="4000", now=100.0) == (4000.0, "--end")
    with pytest.raises(UserError, match="walltime"):
        allocation_end(walltime="ten minutes")
    with pytest.raises(UserError, match="ISO"):
        parse_end("tomorrow")
    assert parse_end("2026-11-22T18:30:00+00:00") == 1795372200.0


@pytest.mark.integration
def test_short_allocation_stops_cleanly_and_resume_completes(local_session, tmp_path):
    out = tmp_path / "o"
    spec = {
        "name": "short",
        "events": 150,
        "events_per_range": 1,
        "events_per_merge": 30,
        "seed": 2,
        "payload": {"name": "emulate", "seconds_per_event": 0.1},
    }
    # The allocation is 6 s: it must not be spent waiting for the shared session's
    # workers to connect (the first test of an xdist worker starts them).
    deadline = time.time() + 120
    while not local_session.connected_workers("local") and time.time() < deadline:
        time.sleep(0.2)
    end = time.time() + 6.0
    first = api.run_campaign(
        spec, out, session=local_session, allocation_end=end, margin_seconds=1.0
    )
    assert first.status == "walltime", first.message
    assert first.ended < end, "the driver outlived the allocation"
    assert first.last_range_started <= end - 1.0
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    try:
        s = led.summary()
        assert s.ranges["running"] == 0 and s.merges["running"] == 0, "work left half-done"
        assert 0 < s.ranges["done"] + s.ranges["merged"] < 150
        for row in led.ranges([RangeState.DONE, RangeState.MERGED]):
            assert (out / row.output).stat().st_size == row.size
    finally:
        led.close()
    assert not list(out.rglob(".tmp-*"))
    before = done_ranges(out)

    second = api.resume_campaign(out, session=local_session)
    assert second.status == "complete", second.message
    assert second.ranges_this_run == 150 - len(before)
    after = done_ranges(out)
    assert all(after[i] == n for i, n in before.items()), "a done range was re-run"
    assert_every_event_once(out, 0, 150)


@pytest.mark.integration
def test_cli_walltime_exit_code_and_resume(tmp_path, local_session):
    """Through the console script: exit code 4 and how to resume; the resume completes.

    The resume runs on the shared session: ``es-run resume`` through the console
    script is exercised by the chaos test (tests/test_chaos.py).
    """
    import subprocess
    import sys
    from pathlib import Path

    from tests.helpers import write_campaign

    es_run = str(Path(sys.executable).parent / "es-run")
    # 16 s of work per worker against a 16 s allocation: whatever Parsl's start-up
    # takes on a busy machine (3 to 12 s), some ranges are done and some are not.
    path = write_campaign(
        tmp_path,
        "cut",
        events=320,
        events_per_range=1,
        events_per_merge=100,
        payload={"name": "emulate", "seconds_per_event": 0.1},
    )
    out = tmp_path / "out"
    cmd = [es_run, "submit", str(path), "-o", str(out), "--walltime", "00:00:16", "--margin", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 4, first.stdout + first.stderr
    assert "the last range started" in first.stdout
    assert f"es-run resume {out}" in first.stderr
    assert "Traceback" not in first.stderr
    before = done_ranges(out)
    assert 0 < len(before) < 320
    second = api.resume_campaign(out, session=local_session)
    assert second.status == "complete", second.message
    assert all(done_ranges(out)[i] == n for i, n in before.items()), "a done range was re-run"
    assert_every_event_once(out, 0, 320)
