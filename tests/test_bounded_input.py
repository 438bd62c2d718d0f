"""Input that is small on disk but huge in memory or in range is refused up front."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
from typer.testing import CliRunner

from parsl_es.campaign import MAX_MERGE_GROUPS, campaign_from_dict, load_campaign
from parsl_es.cli.main import app
from parsl_es.errors import UserError
from parsl_es.ledger import Ledger
from parsl_es.payloads import make_payload
from parsl_es.ranges import RangePlan
from parsl_es.validation import EventTally, validate_campaign_outputs
from parsl_es.yamlfile import MAX_NODES
from tests.helpers import assert_usage_error, write_campaign

runner = CliRunner()


def billion_laughs() -> str:
    """9 levels of 9 aliases: a few hundred bytes that expand to 9**9 strings."""
    out = ["l0: &l0 [" + ",".join(["lol"] * 9) + "]"]
    for level in range(1, 10):
        refs = ",".join([f"*l{level - 1}"] * 9)
        out.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(out) + "\n"


def test_billion_laughs_is_refused_fast_small_and_writes_nothing(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 1000
    out = tmp_path / "out"
    # In a fresh interpreter, so the peak RSS measured is this refusal's alone; its CPU time,
    # not wall time, so that other processes on a shared machine cannot fail it.
    script = textwrap.dedent(
        f"""
        import json, resource, time
        from typer.testing import CliRunner
        from parsl_es.cli.main import app
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.process_time()
        result = CliRunner().invoke(app, ["submit", {str(bomb)!r}, "-o", {str(out)!r}])
        elapsed = time.process_time() - start
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"code": result.exit_code, "output": result.output,
                          "elapsed": elapsed, "rss_kib": after - before}}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["code"] == 2, report
    text = report["output"].strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    assert "bomb.yaml" in text and "YAML alias expansion" in text and str(MAX_NODES) in text
    assert report["elapsed"] < 2.0, report
    assert report["rss_kib"] < 200 * 1024, report  # ru_maxrss is in KiB on Linux
    assert not out.exists()


def test_billion_laughs_via_load_campaign(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    with pytest.raises(UserError, match="too many aliases/nodes"):
        load_campaign(bomb)


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: x\nloop: &a [1, *a]\n")
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "loop.yaml", "recursive alias")
    assert not (tmp_path / "o").exists()


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 20000 + "]" * 20000 + "\n")
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "deep.yaml", "nested too deeply")


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\n" + "# padding\n" * 200_000)
    result = runner.invoke(app, ["submit", str(path), "-o", str(tmp_path / "o")])
    assert_usage_error(result, "huge.yaml", "bytes")
    assert not (tmp_path / "o").exists()


def test_a_few_aliases_still_load(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: aliased
            events: &n 40
            events_per_range: 2
            events_per_merge: 10
            seed: *n
            payload: &p
              name: emulate
            steps:
              simulate: &nt local
              merge: *nt
            """
        )
    )
    spec = load_campaign(path)
    assert spec.seed == 40
    assert spec.payload.name == "emulate"
    assert spec.steps.merge == "local"


@pytest.mark.parametrize(
    "fields",
    [
        {"first_event": 10_000_000_000_000_000_000},
        {"first_event": 9_223_372_036_854_775_000, "events": 1000, "events_per_merge": 10},
    ],
)
def test_event_numbers_beyond_64_bits_are_refused(tmp_path, fields):
    path = write_campaign(tmp_path, "big", **fields)
    out = tmp_path / "out"
    result = runner.invoke(app, ["submit", str(path), "-o", str(out)])
    assert_usage_error(result, "big.yaml", "first_event", "2**63")
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "first_event" in t)
    assert f"big.yaml:{line}:" in result.output
    assert not out.exists()


def test_last_event_at_the_limit_is_accepted(tmp_path):
    path = write_campaign(tmp_path, "edge", first_event=2**63 - 40, events=40)
    assert load_campaign(path).first_event == 2**63 - 40


def test_too_many_merge_groups_are_refused_with_the_least_that_fits(tmp_path):
    path = write_campaign(tmp_path, "groups", events=10**12, events_per_range=1, events_per_merge=1)
    out = tmp_path / "out"
    start = time.process_time()
    result = runner.invoke(app, ["submit", str(path), "-o", str(out)])
    assert time.process_time() - start < 2.0
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "per_merge" in t)
    assert_usage_error(result, f"groups.yaml:{line}:", "events_per_merge", str(MAX_MERGE_GROUPS))
    assert "events_per_merge >= 10000000" in result.output
    assert not out.exists()


def test_the_largest_accepted_campaign_is_created_at_once(tmp_path):
    """10^12 events in the most merge groups allowed, ending at the last 64-bit event
    number: every group's row as the plan cuts it, written without running away (it
    took ten minutes, one row per group from Python; ``python -m benchmarks.creation``
    measures it)."""
    spec = campaign_from_dict(
        {
            "name": "huge",
            "events": 10**12,
            "first_event": 2**63 - 10**12,
            "events_per_range": 1,
            "events_per_merge": 10**7,
            "seed": 1,
            "payload": {"name": "emulate"},
        }
    )
    plan = spec.plan
    assert plan.n_merges == MAX_MERGE_GROUPS
    start = time.process_time()
    with Ledger.create(tmp_path / "ledger.sqlite", {"campaign": spec.to_json()}, plan) as led:
        elapsed = time.process_time() - start
        assert elapsed < 5.0, elapsed
        assert led.summary().merges["waiting"] == MAX_MERGE_GROUPS
        records = {g: led.merge_record(g) for g in (0, 1, plan.n_merges // 2, plan.n_merges - 1)}
    for g, got in records.items():  # rows as the plan cuts them
        want = plan.group(g)
        assert (got.first_range, got.last_range) == (want.first_range, want.last_range)
        assert (got.first_event, got.last_event) == (want.first_event, want.last_event)
    assert records[plan.n_merges - 1].last_event == 2**63 - 1


def test_campaign_validation_memory_does_not_grow_with_the_campaign(tmp_path):
    """A 10^11-event campaign with nothing merged yet: counted per group, not per event
    (two bytes an event would be 200 GB)."""
    plan = RangePlan(
        campaign="huge",
        events=10**11,
        first_event=0,
        events_per_range=1,
        events_per_merge=10**7,
        seed=1,
    )
    (tmp_path / "validation").mkdir()
    payload = make_payload("emulate", {})
    tracemalloc.start()
    try:
        report = validate_campaign_outputs(payload, plan, tmp_path, [], with_plots=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not report["passed"]
    assert report["events_missing"] == 10**11 and report["events_found"] == 0
    assert peak < 100 * 2**20, peak


def _numbers(*ranges: tuple[int, int]) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges]).astype(np.int64)


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        (_numbers((10, 19)), {"missing": 0, "duplicated": 0, "misplaced": 0, "outside": 0}),
        (_numbers((10, 14)), {"missing": 5, "duplicated": 0, "misplaced": 0, "outside": 0}),
        (_numbers((10, 19), (12, 13)), {"missing": 0, "duplicated": 2}),
        (_numbers((10, 18), (25, 25)), {"missing": 1, "misplaced": 1, "outside": 0}),
        (_numbers((10, 19), (1000, 1001)), {"missing": 0, "misplaced": 0, "outside": 2}),
    ],
    ids=["exact", "half-missing", "duplicates", "another-groups-event", "outside-the-campaign"],
)
def test_event_tally_counts_one_group_at_a_time(numbers, expected):
    plan = RangePlan(
        campaign="c", events=40, first_event=0, events_per_range=2, events_per_merge=10, seed=1
    )
    tally = EventTally()
    tally.add(numbers, plan.group(1), plan)
    assert tally.found == len(numbers)
    for name, n in expected.items():
        assert getattr(tally, name) == n, name
    assert bool(tally.problems()) == any(expected.values())
