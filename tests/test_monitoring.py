"""Parsl's MonitoringHub for a campaign: its database lands in the output directory."""

from __future__ import annotations

import sqlite3

import pytest

from tests.helpers import assert_every_event_once

# one xdist worker runs the shared es-run campaign (tests/conftest.py) once
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("console")]


def test_monitoring_database_records_the_campaign_tasks(console_campaign):
    _, out, done = console_campaign  # es-run submit --monitoring, shared with test_cli.py
    assert done.returncode == 0, done.stderr[-3000:]
    assert_every_event_once(out, 0, 30)
    conn = sqlite3.connect(out / "monitoring.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"workflow", "task", "status"} <= tables
        apps = dict(conn.execute("SELECT task_func_name, COUNT(*) FROM task GROUP BY 1"))
    finally:
        conn.close()
    assert apps.get("simulate_ranges", 0) >= 1 and apps.get("merge_group") == 2
    assert apps.get("validate_campaign") == 1
