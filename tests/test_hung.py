"""Hung ranges are timed out and redone elsewhere; nothing is lost, nothing doubled."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from parsl_es import api
from parsl_es.failures import HUNG_EXIT_STATUS, RangeTimeout, range_deadline
from parsl_es.ledger import AttemptRow, Ledger
from tests.helpers import assert_every_event_once, done_ranges


def test_soft_deadline_interrupts_a_sleeping_range():
    t0 = time.time()
    with pytest.raises(RangeTimeout, match="longer than its timeout"), range_deadline(0.3):
        time.sleep(30)
    assert time.time() - t0 < 5
    with range_deadline(5):  # a range that finishes in time is untouched
        time.sleep(0.01)


def test_hard_deadline_ends_a_worker_deaf_to_signals():
    code = (
        "import signal, time\n"
        "from parsl_es.failures import range_deadline\n"
        "with range_deadline(0.2, grace=0.5):\n"
        "    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "    time.sleep(60)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == HUNG_EXIT_STATUS
    assert "ending worker" in done.stderr


def _campaign(name: str, **payload) -> dict:
    return {
        "name": name,
        "events": 40,
        "events_per_range": 1,
        "events_per_merge": 20,
        "seed": 6,
        "attempts": 1,  # a hang must not count as a payload failure, or the range is fatal
        # The worker's own deadlines must act first: the driver's allowance for the
        # bundle (twice the timeout plus the slack) is kept well above them, so that a
        # loaded machine cannot let the driver give up on the bundle before.
        "range_timeout": {
            "factor": 5,
            "floor_seconds": 1,
            "ceiling_seconds": 2,
            "slack_seconds": 30,
        },
        "payload": {"name": "emulate", "seconds_per_event": 0.02, **payload},
    }


def _attempts(out) -> list[AttemptRow]:
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    try:
        return led.attempts()
    finally:
        led.close()


@pytest.mark.integration
@pytest.mark.parametrize(("mode", "outcome"), [("sleep", "timeout"), ("blocked", "lost")])
def test_hung_range_is_redone_and_the_campaign_completes(local_session, tmp_path, mode, outcome):
    """sleep: the worker's soft deadline stops it; blocked: the hard one ends the worker."""
    out = tmp_path / mode
    spec = _campaign(f"hang-{mode}", hang_events=[7], hang_mode=mode)
    result = api.run_campaign(spec, out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 40)
    attempts = _attempts(out)
    hung = [a.outcome for a in attempts if a.index == 7]
    assert hung == [outcome], hung  # then done on its second attempt
    assert done_ranges(out)[7] == 2
    # nothing counted as a payload failure; an ended worker also loses the rest of its bundle
    assert {a.outcome for a in attempts} == {outcome}
