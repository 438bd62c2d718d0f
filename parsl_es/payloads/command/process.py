"""Small helpers around the transform's process, its log and its paths.

Apart from the payload class so that how a process group is killed or a log
tail is quoted can be read (and changed) without the payload's logic around it;
here too the rule for a service-mode transform that keeps dying as it starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from parsl_es.fileio import TMP_MARK

#: Lines of the transform's log quoted in an error message.
TAIL_LINES = 20
PR_SET_PDEATHSIG = 1


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the command and everything it started (transforms fork, runtimes wrap)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(log: Path, offset: int, lines: int = TAIL_LINES) -> str:
    """The last lines this attempt wrote to the log."""
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return "\n".join(line[:300] for line in text.splitlines()[-lines:])


#: A merge attempt's file name ends so, before its suffix (the engine renames it later).
ATTEMPT_SUFFIX = re.compile(r"\.attempt-\d+$")


def _final_stem(output: Path) -> str:
    """The output's name without the engine's temporary prefix, attempt number and suffix."""
    name = output.name
    if name.startswith(TMP_MARK):
        name = name[len(TMP_MARK) :].partition("-")[2] or name
    return ATTEMPT_SUFFIX.sub("", Path(name).stem)


#: Where the engine has ranges and merge attempts write (``ranges/group-NNNNNN/...``).
GROUP_DIR = re.compile(r"group-\d+")


def _campaign_of(output: Path) -> Path | None:
    """The campaign directory of a file in ``ranges/group-NNNNNN/``; None elsewhere."""
    group = output.parent
    if GROUP_DIR.fullmatch(group.name) and group.parent.name == "ranges":
        return group.parent.parent
    return None


def _absolute(path: Path) -> Path:
    """Absolute without resolving symlinks: the command runs in another directory."""
    return Path(os.path.abspath(path))


def _prctl() -> Callable | None:
    """``prctl`` of the C library, looked up in the worker: a child forked from a
    process with threads had better not call ``dlopen`` before it ``exec``s."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGKILL when the worker dies (Linux)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


class InitDeaths:
    """The rule "a transform that dies while initialising ``limit`` times in a row is
    broken for good": a bad release, a missing file. Any transform that gets as far
    as asking for events resets the count. Pure, so that it is tested on its own."""

    def __init__(self, limit: int = 3) -> None:
        self.limit = limit
        self.in_a_row = 0

    def died(self) -> bool:
        """One more death before the first ``Ready``; True when that makes it fatal."""
        self.in_a_row += 1
        return self.in_a_row >= self.limit

    def ready(self) -> None:
        self.in_a_row = 0
