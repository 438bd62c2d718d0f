"""Chain campaigns through es-run on real HTEX: every step exactly once, also after a kill.

The steps are emulate stand-ins: each reads its input step's merged file and
checks that its range's events are the file's at the range's position, so the
chain's arithmetic is checked on real files by every range. Merged files are
read back with numpy and uproot, independently of the ledger.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml

from parsl_es import api
from parsl_es.ledger import Ledger
from parsl_es.states import RangeState
from tests.helpers import assert_every_event_once
from tests.test_reliability import es_run, wait_for

pytestmark = pytest.mark.integration

EVENTS = 60


def chain_file(tmp_path: Path, seconds: dict[str, float], **extra) -> Path:
    def step(name: str, **fields) -> dict:
        payload = {"name": "emulate", "output_format": "npy", "seconds_per_event": seconds[name]}
        return {"payload": payload, **fields}

    data = {
        "name": "ch",
        "events": EVENTS,
        "seed": 3,
        "chain": {
            "gen": step("gen", events_per_range=2, events_per_merge=10, keep_range_files=False),
            "sim": step("sim", input="gen", events_per_range=5, events_per_merge=10),
            "rec": step("rec", input="sim", events_per_range=5, events_per_merge=20),
        },
        **extra,
    }
    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def step_ranges(out: Path) -> dict[str, dict[int, tuple[RangeState, int]]]:
    with Ledger.open(out / "ledger.sqlite", readonly=True) as ledger:
        return {
            name: {r.index: (r.state, r.attempts) for r in step.ranges()}
            for name, step in ledger.steps()
        }


def assert_chain_complete(out: Path) -> None:
    for name in ("gen", "sim", "rec"):
        assert_every_event_once(out / name, 0, EVENTS)
    with Ledger.open(out / "ledger.sqlite", readonly=True) as ledger:
        for name, step in ledger.steps():
            assert step.campaign_passed(), name
            assert all(r.state is RangeState.MERGED for r in step.ranges()), name


def test_a_driver_killed_in_the_middle_of_the_last_step_resumes_each_step_once(
    local_session, tmp_path
):
    path = chain_file(tmp_path, {"gen": 0.02, "sim": 0.02, "rec": 0.3})
    out = tmp_path / "out"
    proc = es_run("submit", str(path), "-o", str(out), start_new_session=True)

    def rec_under_way() -> bool:
        if not (out / "ledger.sqlite").exists():
            return False
        rec = step_ranges(out).get("rec", {})
        done = [s for s, _ in rec.values() if s in (RangeState.DONE, RangeState.MERGED)]
        return 1 <= len(done) < EVENTS // 5 - 2

    try:
        wait_for(rec_under_way, 120, "reconstruction under way")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the node is gone: driver, interchange, workers
        proc.communicate(timeout=30)
    before = step_ranges(out)
    done_before = {
        name: {i: a for i, (s, a) in rows.items() if s in (RangeState.DONE, RangeState.MERGED)}
        for name, rows in before.items()
    }
    assert done_before["rec"] and len(done_before["rec"]) < EVENTS // 5
    result = api.resume_campaign(out, session=local_session)
    assert result.status == "complete", result.message
    assert_chain_complete(out)
    after = step_ranges(out)
    for name, done in done_before.items():
        for i, attempts in done.items():
            if name != "gen":  # gen's range files are gone once merged: never needed again
                assert after[name][i][1] == attempts, f"{name} range {i} done before was redone"
    assert result.per_step["rec"]["events"] < EVENTS
