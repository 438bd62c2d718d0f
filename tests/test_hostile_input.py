"""Hostile input: every case of ``benchmarks/hostile_cases.py`` keeps the bad-input rule.

One line on stderr naming file, field and line; exit 2; no traceback; nothing
written; in well under 2 s. Run in-process (the fast tier); the cases that look
the most expensive also run in a fresh process here, for their memory, and
``python -m benchmarks.hostile`` measures every case that way.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmarks.hostile import WORST_LOOKING, measure
from benchmarks.hostile_cases import CASES, LIMIT_MB, LIMIT_SECONDS, by_name, run_case
from parsl_es.campaign import campaign_from_dict
from parsl_es.ledger import LEDGER_NAME, Ledger
from tests.helpers import assert_usage_error


def test_the_table_is_big_enough_and_every_family_is_there():
    assert len(CASES) >= 40
    assert {c.family for c in CASES} == {"campaign", "site", "set", "cli", "output", "chain"}
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case, tmp_path):
    setup, outcome, problems = run_case(case, tmp_path)
    result = SimpleNamespace(exit_code=outcome.code, output=outcome.stdout + outcome.stderr)
    assert not problems, f"{case.name}: {problems}\n{result.output}"
    assert_usage_error(result, *setup.needles)
    assert outcome.seconds < LIMIT_SECONDS


def test_the_worst_looking_cases_in_fresh_processes(tmp_path):
    """Time and peak memory of the whole es-run process, imports included."""
    for name in WORST_LOOKING[:3]:  # a bomb, a huge number, a very long string
        report = measure(by_name(name), tmp_path / name)
        assert not report["problems"], report
        assert report["seconds"] < LIMIT_SECONDS, report
        assert report["peak_mb"] < LIMIT_MB, report


@pytest.mark.parametrize("name", ["hash #1", "question?x", "percent%20x"])
def test_a_ledger_in_a_directory_named_with_uri_characters(tmp_path, name):
    """SQLite is given the ledger's path as a URI: unquoted, '#' and '?' cut the path short
    and '%20' decodes, so the ledger was opened (or created) somewhere else."""
    spec = campaign_from_dict(
        {"name": "c", "events": 4, "events_per_range": 2, "events_per_merge": 4, "seed": 1}
        | {"payload": {"name": "emulate"}}
    )
    out = tmp_path / name
    out.mkdir()
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan).close()
    ledger = Ledger.open(out / LEDGER_NAME, readonly=True)
    try:
        assert ledger.plan.campaign == "c"
    finally:
        ledger.close()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing beside it
