"""Under ``.ci/run`` every skip is a failure: CI cannot pass with a test that did not run.

Skips say why (no Slurm cluster, no browser, no tmpfs mount, no torch), which is
right on a laptop. ``.ci/run`` starts or installs everything a test needs and sets
``PARSL_ES_NO_SKIPS=1``: there a skip means something is missing, and it is
reported as a failure with its reason. Expected failures (xfail) stay as they are.
"""

from __future__ import annotations

import os

import pytest

NO_SKIPS = "PARSL_ES_NO_SKIPS"


def _fail_a_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get(NO_SKIPS) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where {NO_SKIPS}=1 (.ci/run) demands it run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A test (or its fixture) that skipped."""
    _fail_a_skip((yield).get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """A whole module that skipped as it was imported (``importorskip`` at the top)."""
    _fail_a_skip((yield).get_result())
