"""The two tiers stay honest: a test that starts Parsl without the integration mark fails."""

from __future__ import annotations

from pathlib import Path

import pytest

UNMARKED = """
import subprocess
import sys
from pathlib import Path

import pytest

from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site


def test_starts_parsl(tmp_path):
    ParslBackend(load_site("local"), tmp_path / "run")


def test_uses_the_session(local_session):
    pass


def test_a_driver_in_another_process(tmp_path):
    (tmp_path / "o" / "logs" / "parsl" / "000").mkdir(parents=True)
    (tmp_path / "o" / "logs" / "parsl" / "000" / "parsl.log").write_text("what Parsl leaves")


@pytest.mark.integration
def test_marked(tmp_path):
    (tmp_path / "parsl.log").write_text("allowed")
"""


def test_unmarked_tests_that_start_parsl_fail_and_say_how_to_fix_it(pytester, monkeypatch):
    # the suite's conftest imports tests.helpers: the repository must be importable there
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent.parent))
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_unmarked=UNMARKED)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1, errors=2)
    result.stdout.fnmatch_lines_random(
        [
            "*test_starts_parsl starts a Parsl DataFlowKernel but is not marked integration*",
            "*test_uses_the_session uses local_session but is not marked integration*",
            "*test_a_driver_in_another_process ran Parsl (a driver left *parsl.log) but is not*",
        ]
    )
    assert "pytest.mark.integration" in result.stdout.str()


SKIPPING = """
import pytest


def test_skips():
    pytest.skip("no cluster here")


@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False


def test_passes():
    pass
"""


def test_under_ci_every_skip_is_a_failure(pytester, monkeypatch):
    """.ci/run sets PARSL_ES_NO_SKIPS=1: a test that skipped there has not been run."""
    pytester.makepyfile(
        test_skipping=SKIPPING,
        test_module_skip="import pytest\n\npytest.importorskip('no_such_module')\n\n\n"
        "def test_never_collected():\n    pass\n",
    )
    args = ("-p", "tests.no_skips", "-p", "no:cacheprovider", "-n", "0")
    monkeypatch.delenv("PARSL_ES_NO_SKIPS", raising=False)
    pytester.runpytest_inprocess(*args).assert_outcomes(passed=1, skipped=2, xfailed=1)
    monkeypatch.setenv("PARSL_ES_NO_SKIPS", "1")
    result = pytester.runpytest_inprocess(*args, "test_skipping.py")
    result.assert_outcomes(passed=1, failed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped where PARSL_ES_NO_SKIPS=1 (.ci/run)*no cluster here*"])
    result = pytester.runpytest_inprocess(*args, "test_module_skip.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*skipped where PARSL_ES_NO_SKIPS=1 (.ci/run)*no_such_module*"])


def test_ci_demands_every_test_run():
    assert "export PARSL_ES_NO_SKIPS=1" in (Path(__file__).parent.parent / ".ci/run").read_text()


@pytest.mark.xdist_group("grouping-check")
def test_xdist_groups_hold(request):
    """Tests that share a cluster or a session run on one worker (``--dist loadgroup``
    in pyproject.toml): xdist puts the group in each such test's id. Where it does not
    (pytest 9.2 with pytest-xdist 3.8), the marks are silently ignored."""
    if not getattr(request.config.option, "loadgroup", False):
        return  # not run by xdist's loadgroup (e.g. -n 0): nothing is grouped
    assert request.node.nodeid.endswith("@grouping-check"), request.node.nodeid
