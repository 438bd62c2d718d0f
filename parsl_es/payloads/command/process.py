"""Small helpers around the transform's process, its log and its paths.

Apart from the payload class so that how a process group is killed or a log
tail is quoted can be read (and changed) without the payload's logic around it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

from parsl_es.fileio import TMP_MARK

#: Lines of the transform's log quoted in an error message.
TAIL_LINES = 20


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


def _absolute(path: Path) -> Path:
    """Absolute without resolving symlinks: the command runs in another directory."""
    return Path(os.path.abspath(path))
