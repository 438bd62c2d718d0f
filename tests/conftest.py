"""Shared fixtures: one loaded Parsl site for every test that needs workers.

Starting HTEX costs seconds, so the whole session shares one ``ParslBackend`` on
the local site (real interchange and worker pool on 127.0.0.1), the way a
notebook kernel shares one for all its campaigns.

Two tiers: tests that start Parsl, a Jupyter kernel, a browser or the local
Slurm cluster are marked ``integration``; ``pytest -m "not integration"`` runs
the rest in well under a minute. ``parsl_only_in_integration_tests`` keeps the
marks honest: a test without the mark that starts a Parsl DataFlowKernel or an
HTEX (in this process, or as a driver that leaves a Parsl run directory in its
``tmp_path``) fails and says how to fix it.

Skips say why (no Slurm cluster, no browser, no tmpfs mount, no torch); under
``.ci/run`` every skip is a failure (``tests/no_skips.py``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from parsl.dataflow.dflow import DataFlowKernel
from parsl.executors import HighThroughputExecutor

from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site
from tests.helpers import parsl_processes_under

# tests/test_tiers.py runs the guard in a pytest of its own; tests/no_skips.py: .ci/run
pytest_plugins = ("pytester", "tests.no_skips")

INTEGRATION = "integration"
_HOW = (
    "mark it @pytest.mark.integration (or the module with pytestmark), "
    "or run the engine on the simulated backend (tests/engine_helpers.py)"
)
#: The test being run, for the guards below (fixtures of wider scope start inside it too).
_current: dict[str, pytest.Item | None] = {"item": None}
#: What tests not marked integration started, by node id (the guard may run in another thread).
_violations: dict[str, list[str]] = {}
_violations_lock = threading.Lock()


_call_failed = pytest.StashKey[bool]()


def _integration(item: pytest.Item) -> bool:
    return item.get_closest_marker(INTEGRATION) is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _current["item"] = item
    try:
        yield
    finally:
        _current["item"] = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before any fixture: the shared Parsl session is for integration tests only."""
    if not _integration(item) and "local_session" in getattr(item, "fixturenames", ()):
        pytest.fail(
            f"{item.nodeid} uses local_session but is not marked {INTEGRATION}: {_HOW}",
            pytrace=False,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.stash[_call_failed] = True


def _refuse(what: str) -> None:
    item = _current["item"]
    if item is None or _integration(item):
        return
    message = f"{item.nodeid} starts {what} but is not marked {INTEGRATION}: {_HOW}"
    with _violations_lock:
        _violations.setdefault(item.nodeid, []).append(message)
    pytest.fail(message, pytrace=False)


def _guarded(cls: type, name: str, what: str) -> None:
    original = getattr(cls, name)

    def guard(self, *args, **kwargs):
        _refuse(what)
        return original(self, *args, **kwargs)

    guard.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(cls, name, guard)


_guarded(DataFlowKernel, "__init__", "a Parsl DataFlowKernel")
_guarded(HighThroughputExecutor, "start", "a Parsl HighThroughputExecutor")


@pytest.fixture(autouse=True)
def parsl_only_in_integration_tests(request: pytest.FixtureRequest):
    """A test not marked integration may not start Parsl, in this process or another."""
    node = request.node
    if _integration(node):
        yield
        return
    yield
    with _violations_lock:
        started = _violations.pop(node.nodeid, [])
    if node.stash.get(_call_failed, False):
        return  # the test has failed already (for this reason or another)
    if started:  # e.g. in a thread of the test, where the failure itself was swallowed
        pytest.fail(started[0], pytrace=False)
    tmp = node.funcargs.get("tmp_path") if hasattr(node, "funcargs") else None
    if tmp is not None:
        runs = _parsl_run_dirs(Path(tmp))
        if runs:
            pytest.fail(
                f"{node.nodeid} ran Parsl (a driver left {runs[0]}) but is not marked "
                f"{INTEGRATION}: {_HOW}",
                pytrace=False,
            )


def _parsl_run_dirs(tmp: Path) -> list[Path]:
    """Parsl's log files under ``tmp``: what any Parsl run leaves in its run directory."""
    return sorted(tmp.rglob("parsl.log")) + sorted(tmp.rglob("interchange.log"))


@pytest.fixture(scope="session")
def local_session(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("parsl-run")
    session = ParslBackend(load_site("local"), run_dir)
    yield session
    session.close()


@pytest.fixture(scope="session")
def console_campaign(tmp_path_factory: pytest.TempPathFactory):
    """One small campaign run to completion by the installed ``es-run``, with monitoring
    and encrypted worker traffic.

    An es-run driver starts its own HTEX (about 10 s here), so the console-script
    test (tests/test_cli.py) and the monitoring test (tests/test_monitoring.py)
    read the same run: (campaign file, output directory, the finished process).
    Tests that damage it put it back as it was.
    """
    import subprocess
    import sys

    from tests.helpers import write_campaign

    base = tmp_path_factory.mktemp("console")
    path = write_campaign(base, "cli", events=30, events_per_range=3, events_per_merge=15)
    out = base / "out"
    es_run = str(Path(sys.executable).parent / "es-run")
    # encrypted although on loopback: an encrypted site runs a whole campaign
    command = [es_run, "submit", str(path), "--output", str(out), "--monitoring"]
    done = subprocess.run(
        [*command, "--set", "local.encrypted=true"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return path, out, done


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
