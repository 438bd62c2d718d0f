"""One way in: ``prepare`` checks every input once before anything is written; ``execute`` runs.

Fast: the engine (``drive``) is replaced by a stand-in, so no Parsl starts.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

import parsl_es
from parsl_es import api
from parsl_es.cli.main import app
from parsl_es.engine.result import RunResult, RunStatus
from parsl_es.errors import UserError
from parsl_es.ledger import LEDGER_NAME
from parsl_es.lock import campaign_lock
from tests.helpers import write_campaign

runner = CliRunner()


def fake_result(status: RunStatus = RunStatus.COMPLETE, message: str = "stand-in") -> RunResult:
    return RunResult(
        status=status,
        wall_seconds=1.0,
        events_this_run=0,
        ranges_this_run=0,
        merges_this_run=0,
        failures=0,
        fatal_ranges=[],
        failed_merges=[],
        payload_inits=0,
        workers=0,
        validation=None,
        message=message,
    )


@pytest.fixture
def drives(monkeypatch):
    """The engine replaced: records each call to ``drive`` and returns a complete run."""
    calls: list[dict] = []

    def drive(ledger, prepared, **options):
        calls.append({"output": prepared.output, "site": prepared.site.name, **options})
        return fake_result()

    monkeypatch.setattr(api, "drive", drive)
    return calls


def campaign_output(tmp_path: Path, drives: list) -> Path:
    out = tmp_path / "out"
    assert api.run_campaign(write_campaign(tmp_path), out).status == "complete"
    assert len(drives) == 1 and (out / LEDGER_NAME).is_file()
    return out


# --- every bad input, before anything is written ---------------------------------------


@pytest.mark.parametrize(
    ("campaign", "kwargs", "needle"),
    [
        ({"evnets": 5}, {}, "unknown key 'evnets'"),
        ({"payload": {"name": "nope"}}, {}, "unknown payload 'nope'"),
        ({"steps": {"simulate": "gpu"}}, {}, "node type 'gpu' is not in site 'local'"),
        (
            {"payload": {"name": "command", "simulate": "no-such-transform.py --out {output}"}},
            {},
            "'no-such-transform.py' not found",
        ),
        ({}, {"site": "locl"}, "unknown site 'locl'"),
        ({}, {"site": "local", "overrides": ["nonsense"]}, "expected KEY=VALUE"),
        ({}, {"site": "perlmutter"}, "site 'perlmutter' is not ready"),
    ],
)
def test_bad_input_raises_before_anything_is_written(tmp_path, drives, campaign, kwargs, needle):
    path = write_campaign(tmp_path, "bad", **campaign)
    out = tmp_path / "out"
    with pytest.raises(UserError, match=needle):
        api.run_campaign(path, out, **kwargs)
    assert not out.exists() and not drives


def test_bad_output_directories_are_refused_as_they_are(tmp_path, drives):
    path = write_campaign(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        api.prepare(path, busy)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UserError, match="not a directory"):
        api.prepare(path, afile / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "busy", "c.yaml"]
    assert sorted(p.name for p in busy.iterdir()) == ["something"]


def test_prepare_writes_nothing_and_names_its_inputs(tmp_path):
    path = write_campaign(tmp_path)
    prepared = api.prepare(path, tmp_path / "o", site="local")
    assert prepared.spec.name == "c" and prepared.site.name == "local"
    assert prepared.source == str(path) and not prepared.resume
    assert prepared.output == tmp_path / "o" and not prepared.output.exists()
    with pytest.raises(AttributeError):
        prepared.output = tmp_path  # frozen


# --- the same output default everywhere -------------------------------------------------


def test_output_defaults_to_the_key_then_name_output_in_python_and_cli(
    tmp_path, monkeypatch, drives
):
    monkeypatch.chdir(tmp_path)
    plain = write_campaign(tmp_path, "plain")
    keyed = write_campaign(tmp_path, "keyed", output="from-the-key")
    assert api.prepare(plain).output == Path("plain-output")
    assert api.prepare(keyed).output == Path("from-the-key")
    assert api.prepare(keyed, "given").output == Path("given")

    seen = []
    monkeypatch.setattr(api, "execute", lambda p, **_: seen.append(p) or fake_result())
    for path in (plain, keyed):
        result = runner.invoke(app, ["submit", str(path)])
        assert result.exit_code == 0, result.output
    assert [p.output for p in seen] == [Path("plain-output"), Path("from-the-key")]
    assert "-> plain-output" in runner.invoke(app, ["submit", str(plain)]).output

    import parsl_es.notebook as nb

    monkeypatch.setattr(nb, "_session", lambda site: object())
    monkeypatch.setattr(nb.CampaignHandle, "start", lambda self, show=True: None)
    assert nb.submit(plain).output == Path("plain-output")
    assert nb.submit({"name": "d", **_small()}).output == Path("d-output")


def _small() -> dict:
    return {
        "events": 4,
        "events_per_range": 2,
        "events_per_merge": 4,
        "seed": 1,
        "payload": {"name": "emulate"},
    }


def test_submit_help_says_the_default():
    text = " ".join(runner.invoke(app, ["submit", "--help"]).output.split())
    assert "NAME-output" in text


# --- resume ---------------------------------------------------------------------------------


def test_set_without_site_on_resume_is_refused(tmp_path, drives):
    out = campaign_output(tmp_path, drives)
    with pytest.raises(UserError, match="--set needs --site"):
        api.prepare_resume(out, overrides=["max_blocks=2"])
    result = runner.invoke(app, ["resume", str(out), "--set", "max_blocks=2"])
    assert result.exit_code == 2 and "--set needs --site" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert api.prepare_resume(out, site="local", overrides=["max_blocks=2"]).resume


def test_resume_uses_the_recorded_site_and_drives_again(tmp_path, drives):
    out = campaign_output(tmp_path, drives)
    prepared = api.prepare_resume(out)
    assert prepared.site.name == "local" and prepared.spec.name == "c"
    assert api.execute(prepared).status == "complete"
    assert [call["output"] for call in drives] == [out, out]


def test_resume_takes_the_lock_before_opening_the_ledger_for_writing(tmp_path, drives):
    out = campaign_output(tmp_path, drives)
    ledger = out / LEDGER_NAME
    # A ledger as an older parsl-es left it (no WAL): opening it read-write changes it.
    conn = sqlite3.connect(ledger)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    before = (ledger.read_bytes(), ledger.stat().st_mtime_ns)

    with campaign_lock(out), pytest.raises(UserError, match=f"pid {os.getpid()} on"):
        api.resume_campaign(out)  # another driver holds the campaign

    assert (ledger.read_bytes(), ledger.stat().st_mtime_ns) == before
    assert not (out / f"{LEDGER_NAME}-wal").exists()
    assert len(drives) == 1
    # the check is sharp: a read-write open (what resume used to do first) changes it
    from parsl_es.ledger import open_campaign

    open_campaign(out).close()
    assert ledger.read_bytes() != before[0]


# --- the CLI's one table of exit codes ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "line"),
    [
        (RunStatus.COMPLETE, 0, "outputs: {out}/merged   validation: {out}/validation"),
        (RunStatus.FAILED, 1, "see {out}/logs/driver.log; 'es-run resume {out}' retries"),
        (RunStatus.NO_SPACE, 2, "error: stand-in: es-run resume {out}"),
        (RunStatus.STOPPED, 3, "campaign incomplete; continue it with: es-run resume {out}"),
        (RunStatus.WALLTIME, 4, "in the next allocation run: es-run resume {out}"),
    ],
)
def test_run_status_maps_to_exit_code_and_message(tmp_path, monkeypatch, status, code, line):
    monkeypatch.setattr(api, "execute", lambda p, **_: fake_result(status))
    out = tmp_path / "o"
    result = runner.invoke(app, ["submit", str(write_campaign(tmp_path)), "-o", str(out)])
    assert result.exit_code == code, result.output
    assert " ".join(line.format(out=out).split()) in " ".join(result.output.split())
    assert "this run: 0 events in 0 ranges" in result.output


def test_public_names():
    assert set(parsl_es.__all__) == {
        "CampaignSpec",
        "RunResult",
        "RunStatus",
        "UserError",
        "__version__",
        "campaign_from_dict",
        "load_campaign",
        "resume_campaign",
        "run_campaign",
        "submit",
    }
    for name in parsl_es.__all__:
        assert getattr(parsl_es, name) is not None
    assert parsl_es.run_campaign is api.run_campaign
    assert parsl_es.RunStatus is RunStatus


def test_a_directory_holding_only_a_dead_drivers_lock_files_counts_as_empty(tmp_path, drives):
    path = write_campaign(tmp_path)
    left = tmp_path / "left"
    left.mkdir()
    (left / ".driver.lock").write_text("{}")
    (left / ".driver.lease").write_text("{}")  # a driver killed on a file system without flock
    assert api.prepare(path, left).output == left
