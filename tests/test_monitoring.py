"""Parsl's MonitoringHub for a campaign: its database lands in the output directory."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import assert_every_event_once, write_campaign

pytestmark = pytest.mark.integration

ES_RUN = str(Path(sys.executable).parent / "es-run")


def test_monitoring_database_records_the_campaign_tasks(tmp_path):
    path = write_campaign(tmp_path, "watched", events=20, events_per_range=2, events_per_merge=10)
    out = tmp_path / "out"
    done = subprocess.run(
        [ES_RUN, "submit", str(path), "-o", str(out), "--monitoring"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_every_event_once(out, 0, 20)
    conn = sqlite3.connect(out / "monitoring.db")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"workflow", "task", "status"} <= tables
        apps = dict(conn.execute("SELECT task_func_name, COUNT(*) FROM task GROUP BY 1"))
    finally:
        conn.close()
    assert apps.get("simulate_ranges", 0) >= 1 and apps.get("merge_group") == 2
    assert apps.get("validate_campaign") == 1
