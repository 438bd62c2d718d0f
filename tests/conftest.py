"""Shared fixtures: one loaded Parsl site for every test that needs workers.

Starting HTEX costs seconds, so the whole session shares one ``ParslBackend`` on
the local site (real interchange and worker pool on 127.0.0.1), the way a
notebook kernel shares one for all its campaigns.
"""

from __future__ import annotations

import time

import pytest

from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site
from tests.helpers import parsl_processes_under


@pytest.fixture(scope="session")
def local_session(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("parsl-run")
    session = ParslBackend(load_site("local"), run_dir)
    yield session
    session.close()


@pytest.fixture(scope="session", autouse=True)
def no_orphans(tmp_path_factory: pytest.TempPathFactory):
    """After the suite, no interchange or worker pool of any test may be left running.

    Every Parsl run directory of the tests lies under pytest's base temp
    directory: worker pools name it in their command line, interchanges hold
    their log open in it and name their PID in that log (their parent is their
    guard, never init). See ``tests/test_orphans.py`` for proof that it finds one.
    """
    yield
    base = str(tmp_path_factory.getbasetemp())
    deadline = time.time() + 15
    while True:
        left = parsl_processes_under(base)
        if not left or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"
