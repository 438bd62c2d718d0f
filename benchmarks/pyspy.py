"""Sampling profiles of other processes (Parsl's worker pool, its interchange) with py-spy.

cProfile sees only this process; the hand-over between two tasks happens in
processes Parsl starts. ``py-spy record`` samples a running process from outside
(``pip install -e '.[bench]'``); ``Sampler`` runs it for a fixed time and
``summary`` turns its raw output (``frame;frame;... count`` per line) into the
functions where the process was found running, own and inclusive shares.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


class Sampler:
    """``py-spy record`` of one process for ``seconds``, non-blocking, active threads only."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 200) -> None:
        self.pid, self.seconds, self.out, self.rate = pid, seconds, out, rate
        self._proc: subprocess.Popen | None = None
        # (found when made, so that a missing py-spy stops the caller before it measures)
        beside = Path(sys.executable).parent / "py-spy"  # a virtualenv not on PATH
        exe = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if exe is None:
            raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
        self.exe = exe

    def start(self) -> None:
        cmd = [
            self.exe,
            "record",
            "--pid",
            str(self.pid),
            "--duration",
            str(max(1, round(self.seconds))),
        ]
        cmd += ["--rate", str(self.rate), "--format", "raw", "--nonblocking", "-o", str(self.out)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> bool:
        """Whether a profile was written."""
        if self._proc is not None:
            self._proc.wait(timeout=self.seconds + 60)
        return self.out.exists()


def summary(raw: Path, seconds: float, rate: int, top: int = 12, only: str | None = None) -> dict:
    """Where the sampled process ran: its busy share of a core, and by function.

    ``own``: samples whose innermost frame is the function; ``inclusive``: samples
    with the function anywhere on the stack (once per sample). Shares are of all
    samples taken (``seconds x rate``), so they read as fractions of a core (of
    the time a thread was runnable: one waiting for a core or the GIL is counted).
    ``only``: the stacks that contain it (one thread's, by a function it runs in).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or (only is not None and only not in stack):
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        busy += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    total = max(1.0, seconds * rate)

    def shares(c: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 3)) for name, n in c.most_common(top)]

    return {"busy": round(busy / total, 3), "own": shares(own), "inclusive": shares(inclusive)}


def _short(frame: str) -> str:
    """``recv (multiprocessing/connection.py:250)`` -> ``recv (connection.py)``."""
    name, _, where = frame.partition(" (")
    file = where.split(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name
