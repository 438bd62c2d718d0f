"""SIGINT and SIGTERM at every phase of ``es-run submit``.

In set-up (the campaign read, the ledger being created, Parsl starting) a signal
stops at once and leaves nothing written; once the engine runs, the first signal
is a graceful stop and a second one ends the driver and its workers at once,
leaving a ledger that resumes. The signals arrive at exact moments through the
crash points (``PARSL_ES_CRASH_AT=NAME:1:SIGNAL``: the driver signals itself, as
a terminal or a batch system would), or from the test while ranges run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from parsl_es import api
from parsl_es.crashpoints import ENV
from parsl_es.ledger import Ledger
from parsl_es.states import RangeState
from tests.helpers import assert_every_event_once, done_ranges, write_campaign
from tests.test_reliability import es_run


def submit(campaign: Path, out: Path, crash_at: str | None = None) -> subprocess.Popen:
    return es_run(
        "submit",
        str(campaign),
        "--output",
        str(out),
        env={ENV: crash_at or ""},  # empty: no crash point
        start_new_session=True,  # its own session: every process it leaves can be found
    )


def left_behind(proc: subprocess.Popen, out: Path, wait: float = 15.0) -> list[str]:
    """Processes of the driver's session, or naming its output, still alive after it left."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                mine = os.getsid(p.pid) == proc.pid
            except OSError:
                continue
            cmd = " ".join(p.info.get("cmdline") or [])
            if mine or str(out) in cmd:
                found.append(f"{p.pid}: {cmd}")
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def assert_stopped_in_set_up(proc: subprocess.Popen, signum: signal.Signals) -> None:
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert lines == [f"{signum.name} during set-up: stopped before anything was written"], stderr
    assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize(
    ("point", "signum"),
    [("campaign-read", signal.SIGINT), ("ledger-create", signal.SIGTERM)],
)
def test_a_signal_in_set_up_stops_at_once_and_writes_nothing(tmp_path, point, signum):
    campaign = write_campaign(tmp_path, "setup")
    out = tmp_path / "out"
    assert_stopped_in_set_up(submit(campaign, out, f"{point}:1:{signum.name}"), signum)
    assert not out.exists()


def test_a_signal_while_the_ledger_is_created_in_a_given_empty_directory(tmp_path):
    """The directory was there (empty) before: it is left as it was, bar the lock file."""
    campaign = write_campaign(tmp_path, "setup")
    out = tmp_path / "given"
    out.mkdir()
    proc = submit(campaign, out, "ledger-create:1:SIGINT")
    assert_stopped_in_set_up(proc, signal.SIGINT)
    assert {p.name for p in out.iterdir()} <= {".driver.lock"}


@pytest.mark.integration
def test_a_signal_while_parsl_starts_ends_it_and_leaves_no_process(tmp_path):
    """Parsl's start is shielded: the signal waits for it, then it is ended (no orphans)."""
    campaign = write_campaign(tmp_path, "setup")
    out = tmp_path / "out"
    proc = submit(campaign, out, "site-loading:1:SIGTERM")
    assert_stopped_in_set_up(proc, signal.SIGTERM)
    assert not out.exists()
    assert left_behind(proc, out) == []


@pytest.mark.integration
def test_a_second_signal_ends_driver_and_workers_at_once_and_the_ledger_resumes(
    tmp_path, local_session
):
    campaign = write_campaign(
        tmp_path,
        "abort",
        events=2,
        events_per_range=1,
        events_per_merge=2,
        payload={"name": "emulate", "seconds_per_event": 5},
    )
    out = tmp_path / "out"
    proc = submit(campaign, out)
    deadline = time.monotonic() + 120
    while not _running(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None and _running(out), proc.communicate()
    # SIGTERM (as Slurm sends it) stops gracefully: it would wait 5 s for both ranges
    # (a graceful stop that waits and resumes: tests/test_cli.py, with Ctrl-C).
    proc.send_signal(signal.SIGTERM)
    assert "SIGTERM: finishing what is in flight" in _next_line(proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"SIGINT: the driver and its workers ended at once; in-flight ranges are redone by: "
        f"es-run resume {out}"
    )
    # It did not wait for the ranges in flight: none of them finished.
    assert done_ranges(out) == {}
    assert left_behind(proc, out) == [], "workers or the interchange outlived the driver"

    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 2)
    run = json.loads(sorted((out / "logs").glob("run-*.json"))[-1].read_text())
    assert run["ranges_this_run"] == 2


def _running(out: Path) -> bool:
    if not (out / "ledger.sqlite").exists():
        return False
    with Ledger.open(out / "ledger.sqlite", readonly=True) as led:
        return len(list(led.ranges([RangeState.RUNNING]))) == 2


def _next_line(proc: subprocess.Popen) -> str:
    """The driver's next non-empty line on stderr that is not a progress line (its
    progress display is off, no tty: it prints ``[  12.0s] 3/8 events ...`` lines)."""
    assert proc.stderr is not None
    while line := proc.stderr.readline():
        if line.strip() and not line.startswith("["):
            return line
    return ""
