"""Shared fixtures: one loaded Parsl site for every test that needs workers.

Starting HTEX costs seconds, so the whole session shares one ``ParslBackend`` on
the local site (real interchange and worker pool on 127.0.0.1), the way a
notebook kernel shares one for all its campaigns.
"""

from __future__ import annotations

import time

import psutil
import pytest

from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site


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
    directory, which appears in the command line of the processes Parsl starts;
    orphans re-parented to init are found that way too.
    """
    yield
    base = str(tmp_path_factory.getbasetemp())
    deadline = time.time() + 15
    while True:
        left = _left_behind(base)
        if not left or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not left, f"processes left behind: {left}"


def _left_behind(base: str) -> list[str]:
    """Worker pools of our run directories, and interchanges we (or init) parent."""
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    found = []
    for p in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        worker_pool = "process_worker_pool" in cmd and base in cmd
        interchange = "HTEX interchange" in cmd and (p.pid in mine or p.info.get("ppid") == 1)
        if worker_pool or interchange:
            found.append(cmd)
    return found
