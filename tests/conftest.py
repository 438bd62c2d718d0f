"""Shared fixtures: one loaded Parsl site for every test that needs workers.

Starting HTEX costs seconds, so the whole session shares one ``SiteSession`` on
the local site (real interchange and worker pool on 127.0.0.1), the way a
notebook kernel shares one for all its campaigns.
"""

from __future__ import annotations

import os

import psutil
import pytest

from parsl_es.session import SiteSession
from parsl_es.sites import load_site


@pytest.fixture(scope="session")
def local_session(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("parsl-run")
    session = SiteSession(load_site("local"), run_dir)
    yield session
    session.close()


@pytest.fixture(scope="session", autouse=True)
def no_orphans():
    """After the suite, nothing Parsl started may be left running."""
    yield
    me = psutil.Process(os.getpid())
    left = [p for p in me.children(recursive=True) if _is_parsl(p)]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"


def _is_parsl(p: psutil.Process) -> bool:
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return "process_worker_pool" in cmd or "interchange" in cmd
