"""The suite's left-behind check finds a left-behind interchange (fast; no Parsl).

A real interchange left behind is ``parsl: HTEX interchange`` whose parent is its
guard, re-parented away from the test process when the driver died: neither a
child of the test process nor a child of init. The fake below is just that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.helpers import logged_interchange_pids, parsl_processes_under

FAKE_INTERCHANGE = r"""
import os, sys, time
from parsl.utils import setproctitle
setproctitle("parsl: HTEX " + "interchange")  # not in the guard's command line
log = open(sys.argv[1], "a")
log.write(f"{time.time()} x MainProcess-{os.getpid()} MainThread-1 interchange INFO: up\n")
log.flush()
time.sleep(300)
"""
# The guard, started by a process that exits at once: re-parented, as after a driver's death.
FAKE_GUARD = r"""
import subprocess, sys, time
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]], stdout=subprocess.DEVNULL
)
print(child.pid, flush=True)
sys.stdout.close()
time.sleep(300)
"""
DETACH = r"""
import subprocess, sys
pids = open(sys.argv[-1] + ".pids", "w")
guard = subprocess.Popen(
    sys.argv[1:], start_new_session=True, stdin=subprocess.DEVNULL, stdout=pids,
    stderr=subprocess.DEVNULL,
)
print(guard.pid)
"""


def _start_left_behind(run_dir: Path) -> tuple[int, int]:
    log = run_dir / "000" / "local" / "interchange.log"
    log.parent.mkdir(parents=True)
    guard_cmd = [sys.executable, "-c", FAKE_GUARD, FAKE_INTERCHANGE, str(log)]
    out = subprocess.run(
        [sys.executable, "-c", DETACH, *guard_cmd],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    guard = int(out.stdout)
    pids = Path(str(log) + ".pids")
    deadline = time.time() + 20
    while not (pids.read_text().strip() and log.is_file() and log.read_text()):
        assert time.time() < deadline, "the fake interchange did not start"
        time.sleep(0.1)
    return guard, int(pids.read_text())


def test_left_behind_interchange_is_found_then_gone_when_killed(tmp_path):
    run_dir = tmp_path / "parsl-run"
    guard, interchange = _start_left_behind(run_dir)
    try:
        ic = psutil.Process(interchange)
        deadline = time.time() + 10
        while "HTEX interchange" not in " ".join(ic.cmdline()):
            assert time.time() < deadline
            time.sleep(0.1)
        # what the old check looked at: not our child, and its parent is not init
        assert interchange not in {p.pid for p in psutil.Process().children(recursive=True)}
        assert ic.ppid() == guard != 1
        assert logged_interchange_pids(run_dir) == {interchange}
        found = parsl_processes_under(tmp_path)
        assert any(f.startswith(f"{interchange}: parsl: HTEX interchange") for f in found), found
        # by its open log alone, too (an interchange that has not logged its PID yet)
        (run_dir / "000" / "local" / "interchange.log").rename(run_dir / "moved.log")
        assert any(f.startswith(f"{interchange}: ") for f in parsl_processes_under(tmp_path))
    finally:
        for pid in (interchange, guard):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while parsl_processes_under(tmp_path):
        assert time.time() < deadline, parsl_processes_under(tmp_path)
        time.sleep(0.1)
