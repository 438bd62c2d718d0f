"""Nothing lost, nothing twice: killed drivers and workers, damaged files, full disks, two drivers.

The damage is done for real: SIGKILL to processes, bytes flipped in files, a
tmpfs that fills up. Every campaign is then checked by reading its merged
files back with uproot, independently of the ledger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from parsl_es import api
from parsl_es.cli.main import app
from parsl_es.crashpoints import ENV as CRASH_ENV
from parsl_es.ledger import AttemptRow, Ledger, RangeRow
from parsl_es.states import Outcome, RangeState, Verdict
from tests.helpers import (
    assert_every_event_once,
    done_ranges,
    logged_interchange_pids,
    parsl_processes_under,
    write_campaign,
)

ES_RUN = str(Path(sys.executable).parent / "es-run")
runner = CliRunner()


def es_run(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [ES_RUN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def ledger_ranges(out: Path) -> list[RangeRow]:
    with Ledger.open(out / "ledger.sqlite", readonly=True) as led:
        return list(led.ranges())


def ledger_attempts(out: Path, outcome: Outcome) -> list[AttemptRow]:
    with Ledger.open(out / "ledger.sqlite", readonly=True) as led:
        return led.attempts([outcome])


def running_ranges(out: Path) -> int:
    return sum(r.state is RangeState.RUNNING for r in ledger_ranges(out))


def wait_for(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# --- the driver killed at chosen moments -----------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize(
    "point", ["submitted:5", "ledger-commit:60", "merge-submitted:2", "merge-recorded:1"]
)
def test_driver_killed_at_a_chosen_moment_resumes_exactly_once(local_session, tmp_path, point):
    path = write_campaign(
        tmp_path,
        "crash",
        events=120,
        events_per_range=1,
        events_per_merge=20,
        payload={"name": "emulate", "seconds_per_event": 0.02},
    )
    out = tmp_path / "out"
    proc = es_run("submit", str(path), "-o", str(out), env={CRASH_ENV: point})
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, stderr
    before = done_ranges(out)
    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    after = done_ranges(out)
    assert all(after[i] == n for i, n in before.items()), "a range done before the kill was re-run"
    assert_every_event_once(out, 0, 120)
    assert not list(out.rglob(".tmp-*")), "partial files left behind"
    # The killed driver's interchange, found by its run directory (its guard was
    # re-parented when the driver died: the driver's PID no longer leads to it).
    run_dir = out / "logs" / "parsl"
    assert logged_interchange_pids(run_dir), "no interchange PID in the driver's run directory"
    wait_for(
        lambda: not parsl_processes_under(run_dir, pools=False),
        20,
        "the killed driver's interchange to end",
    )


# --- one driver per campaign -----------------------------------------------------------


@pytest.mark.integration
def test_second_driver_is_refused_and_a_dead_one_leaves_no_lock(local_session, tmp_path):
    path = write_campaign(
        tmp_path,
        "locked",
        events=200,
        events_per_range=1,
        events_per_merge=100,
        payload={"name": "emulate", "seconds_per_event": 0.05},
    )
    out = tmp_path / "out"
    proc = es_run("submit", str(path), "-o", str(out))
    try:
        wait_for(lambda: (out / "ledger.sqlite").exists() and done_ranges(out), what="progress")
        for cmd in ("resume", "validate"):
            refused = runner.invoke(app, [cmd, str(out)])
            assert refused.exit_code == 2, refused.output
            assert "another es-run driver is running this campaign" in refused.output
            assert f"pid {proc.pid}" in refused.output and "Traceback" not in refused.output
        again = runner.invoke(app, ["submit", str(path), "-o", str(out)])
        assert again.exit_code == 2 and "already holds a campaign" in again.output
    finally:
        proc.send_signal(signal.SIGKILL)  # the driver alone, as a node failure would
        proc.communicate(timeout=60)
    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 200)


# --- graceful stops ------------------------------------------------------------------------


# --- lost workers ----------------------------------------------------------------------------


@pytest.mark.integration
def test_worker_killed_mid_range_costs_no_attempt(local_session, tmp_path):
    spec = {
        "name": "workerkill",
        "events": 40,
        "events_per_range": 1,
        "events_per_merge": 20,
        "seed": 2,
        "attempts": 1,  # one counted failure would make a range fatal
        "payload": {"name": "emulate", "seconds_per_event": 0.3},
    }
    out = tmp_path / "out"
    killed: list[int] = []

    def workers_not_killed() -> set[int]:
        rows = [r for r in ledger_ranges(out) if r.worker]
        return {int(r.worker.rsplit(":", 1)[1]) for r in rows} - set(killed)

    def kill_workers() -> None:
        """SIGKILL a worker that is running ranges until one dies mid-range."""
        for _ in range(6):
            wait_for(lambda: (out / "ledger.sqlite").exists() and len(done_ranges(out)) >= 2)
            wait_for(lambda: bool(workers_not_killed()), 30, "a worker not killed yet")
            victim = min(workers_not_killed())
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            # HTEX notices a dead worker within its heartbeat period (2 s on the local site);
            # a worker killed between ranges loses nothing: then the next one is tried
            with contextlib.suppress(AssertionError):
                wait_for(lambda: bool(ledger_attempts(out, Outcome.LOST)), 6, "a lost attempt")
            if ledger_attempts(out, Outcome.LOST):
                return

    killer = threading.Thread(target=kill_workers, daemon=True)
    killer.start()
    result = api.run_campaign(spec, out, session=local_session)
    killer.join(60)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 40)
    lost = ledger_attempts(out, Outcome.LOST)
    assert lost, "no range was lost with its worker"
    assert "WorkerLost" in lost[0].error
    assert sum(r.failures for r in ledger_ranges(out)) == 0


# --- damaged files --------------------------------------------------------------------------


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.integration
def test_damaged_outputs_are_detected_marked_and_redone(local_session, tmp_path):
    spec = {
        "name": "damage",
        "events": 40,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 12,
        "payload": {"name": "emulate"},
    }
    out = tmp_path / "out"
    assert api.run_campaign(spec, out, session=local_session).status == "complete"
    merged = sorted((out / "merged").glob("*.root"))
    ranges = {r.index: out / r.output for r in ledger_ranges(out)}
    merged[0].unlink()  # group 0: merged file deleted
    _flip_byte(merged[1])  # group 1: merged file altered, same size
    _flip_byte(merged[2])  # group 2: merged file and one of its range files altered
    _flip_byte(ranges[11])
    ranges[16].write_bytes(ranges[16].read_bytes()[:100])  # group 3: a range file truncated

    checked = runner.invoke(app, ["validate", str(out)])
    assert checked.exit_code == 1
    for name in (merged[0].name, merged[1].name, merged[2].name):
        assert name in checked.output
    with Ledger.open(out / "ledger.sqlite", readonly=True) as led:
        marked = [m.group for m in led.merge_records() if m.validation is Verdict.FAILED]
    assert marked == [0, 1, 2]

    before = done_ranges(out)
    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert result.merges_this_run == 3
    assert result.ranges_this_run == 1, "only the damaged range of group 2 is simulated again"
    damaged = ledger_attempts(out, Outcome.DAMAGED)
    assert [d.index for d in damaged] == [11]
    after = done_ranges(out)
    assert all(after[i] == n for i, n in before.items() if i != 11)
    assert_every_event_once(out, 0, 40)
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0


# --- full and read-only disks ---------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, options: str):
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.integration
def test_disk_full_stops_cleanly_and_resume_completes(local_session, tmp_path):
    with tmpfs(tmp_path / "small", "size=1500k") as disk:
        path = write_campaign(
            tmp_path,
            "full",
            events=200,
            events_per_range=1,
            events_per_merge=50,
            payload={"name": "emulate", "seconds_per_event": 0.01},
        )
        out = disk / "out"
        proc = es_run("submit", str(path), "-o", str(out))
        stdout, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 2, stdout + stderr
        assert "the disk is full" in stderr and f"es-run resume {out}" in stderr
        assert "Traceback" not in stderr
        # The ledger may itself have been unable to commit the last outcomes: ranges it
        # still calls running are redone on resume. What it calls done is on disk.
        for r in ledger_ranges(out):
            if r.state in (RangeState.DONE, RangeState.MERGED):
                assert (out / r.output).stat().st_size == r.size
        assert not list(out.rglob(".tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
        result = api.resume_campaign(out, session=local_session)
        assert result.status == "complete", result.message
        assert_every_event_once(out, 0, 200)


def test_read_only_output_is_refused_and_nothing_written(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as disk:
        path = write_campaign(tmp_path, "ro")
        result = runner.invoke(app, ["submit", str(path), "-o", str(disk / "out")])
        assert result.exit_code == 2, result.output
        assert "not writable" in result.output and str(disk / "out") in result.output
        assert not list(disk.iterdir())


# --- bad input through the CLI -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["empty"]),
        ("\x00\x01\x02binary\xff", ["binary file, expected YAML text"]),
        ("name: x\nevents: many\n", ["events", "integer"]),
        (
            "name: x\nevents: 10\nevents_per_range: 0\nevents_per_merge: 5\nseed: 1\n"
            "payload: {name: emulate}\n",
            ["events_per_range", "greater than 0"],
        ),
        (
            "name: x\nevents: 10\nevents_per_range: 1\nevents_per_merge: 5\nseed: 1\n"
            "payload: {name: emulate, seconds_per_evnt: 1}\n",
            ["payload", "seconds_per_evnt", "did you mean 'seconds_per_event'"],
        ),
        (
            "name: x\nevents: 10\nevents_per_range: 1\nevents_per_merge: 5\nseed: 1\n"
            "range_timeout: {floor_seconds: 100, ceiling_seconds: 10}\n"
            "payload: {name: emulate}\n",
            ["range_timeout", "below floor_seconds"],
        ),
        (
            "name: x\nevents: 10\nevents_per_range: 1\nevents_per_merge: 5\nseed: 1\n"
            "payload: {name: command, simulate: 'no-such-transform.py --out {output}'}\n",
            ["payload.simulate", "'no-such-transform.py' not found"],
        ),
    ],
)
def test_bad_campaign_files_exit_2_name_the_problem_and_write_nothing(tmp_path, text, needles):
    path = tmp_path / "campaign.yaml"
    path.write_bytes(text.encode("latin-1"))
    out = tmp_path / "out"
    result = runner.invoke(app, ["submit", str(path), "-o", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in [str(path), *needles]:
        assert needle in result.output, result.output
    assert not out.exists()


def test_bad_site_file_and_options(tmp_path):
    campaign = write_campaign(tmp_path)
    site = tmp_path / "site.yaml"
    site.write_text("name: s\nnode_types: {cpu: {}}\nsteps: {simulate: [gpu], merge: cpu}\n")
    out = tmp_path / "out"
    for args, needles in (
        (["--site", str(site)], [str(site), "validate"]),
        (["--set", "max_blocks=-1"], ["max_blocks"]),
        (["--walltime", "ten minutes"], ["--walltime", "[D-]HH:MM:SS"]),
        (["--end", "2001-01-01T00:00"], ["already past"]),
    ):
        result = runner.invoke(app, ["submit", str(campaign), "-o", str(out), *args])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        for needle in needles:
            assert needle in result.output, result.output
        assert not out.exists()


def test_python_api_raises_user_error_and_writes_nothing(tmp_path):
    from parsl_es import UserError

    with pytest.raises(UserError, match="events_per_merge"):
        api.run_campaign(
            {
                "name": "x",
                "events": 10,
                "events_per_range": 3,
                "events_per_merge": 5,
                "seed": 1,
                "payload": {"name": "emulate"},
            },
            tmp_path / "out",
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_keyboard_interrupt_in_python_stops_gracefully(tmp_path):
    """Ctrl-C in a notebook: KeyboardInterrupt in the driver's thread, not a signal handler."""
    out = tmp_path / "out"
    code = f"""
import sys
from parsl_es import api
spec = dict(name="kbd", events=150, events_per_range=1, events_per_merge=50, seed=1,
            payload=dict(name="emulate", seconds_per_event=0.05))
result = api.run_campaign(spec, {str(out)!r})
print("STATUS", result.status, result.ranges_this_run)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(lambda: (out / "ledger.sqlite").exists() and len(done_ranges(out)) >= 10)
    proc.send_signal(signal.SIGINT)  # Python's default handler raises KeyboardInterrupt
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "STATUS stopped" in stdout, stdout + stderr
    assert running_ranges(out) == 0
    assert 10 <= len(done_ranges(out)) < 150
