"""Ranges travel in bundles when they are short; retries, progress and output stay per range."""

from __future__ import annotations

from collections import Counter

import pytest

from parsl_es import api
from parsl_es.ledger import Ledger
from tests.helpers import assert_every_event_once


@pytest.mark.integration
def test_bundled_campaign_keeps_retries_progress_and_output_per_range(local_session, tmp_path):
    spec = {
        "name": "bundled",
        "events": 1000,
        "events_per_range": 1,
        "events_per_merge": 250,
        "seed": 4,
        "payload": {
            "name": "emulate",
            "output_format": "npy",
            "fail_events": [500, 999],  # one mid-campaign, one in the very last range
            "fail_times": 1,
        },
    }
    seen = []
    out = tmp_path / "o"
    result = api.run_campaign(spec, out, session=local_session, on_progress=seen.append)
    assert result.status == "complete", result.message
    assert result.failures == 2 and result.ranges_this_run == 1000
    assert_every_event_once(out, 0, 1000)
    # bundles really happened: fewer tasks than ranges, several ranges per task
    led = Ledger.open(out / "ledger.sqlite", readonly=True)
    try:
        tasks = len(led.tasks())
        rows = list(led.ranges())
        per_task = max(Counter(r.task for r in rows).values())
        failed = [(a.index, a.attempt, a.outcome) for a in led.attempts()]
        retried = {r.index: r.attempts for r in rows if r.attempts > 1}
    finally:
        led.close()
    assert tasks < 1000 / 4 and per_task > 4, (tasks, per_task)
    # the failing ranges alone were retried, each on its own
    assert [tuple(f) for f in failed] == [(500, 1, "failed"), (999, 1, "failed")]
    assert retried == {500: 2, 999: 2}
    # progress counted range by range, never more than the campaign
    done = [p.events_done for p in seen]
    assert done == sorted(done) and done[-1] == 1000
    assert any(0 < d < 1000 for d in done), "no progress reported during the campaign"


def test_emulate_npy_outputs_merge_and_hash_like_root_ones(tmp_path):
    """The benchmarks' npy format keeps the payload interface: merge, event numbers, hash."""
    from parsl_es.payloads import make_payload
    from parsl_es.ranges import RangePlan

    plan = RangePlan("npy", 6, 10, 3, 6, 7)
    npy = make_payload("emulate", {"output_format": "npy"})
    parts = []
    for i in range(plan.n_ranges):
        path = tmp_path / f"r{i}.npy"
        assert npy.simulate(plan.range(i), path) == 3
        parts.append(path)
    merged = tmp_path / "merged.npy"
    assert npy.merge(parts, merged) == 6
    assert list(npy.event_numbers(merged)) == list(range(10, 16))
    again = tmp_path / "again.npy"
    npy.simulate(plan.range(0), again)
    assert npy.content_hash(again) == npy.content_hash(parts[0])
    assert npy.content_hash(parts[0]) != npy.content_hash(parts[1])
    assert npy.histograms(merged)["value"].sum() == 6
