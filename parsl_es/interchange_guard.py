"""Start Parsl's interchange so that it never outlives the driver.

HTEX starts ``interchange.py`` as a child of the driver. If the driver is killed
(SIGKILL, a node failure, the end of an allocation), nothing stops the
interchange: it and its ports stay behind. This guard runs in its place (Parsl
holds the guard's PID): it starts the interchange in a session of its own (so a
terminal's Ctrl-C reaches only the driver, which stops gracefully), passes
Parsl's SIGTERM on to it, ends it as soon as the driver is gone, and arranges
that the kernel kills it if the guard itself is killed.

Run as a script (not ``-m``): it imports nothing of parsl_es or Parsl, so it
starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys

#: How often the guard looks for its driver (s).
POLL_SECONDS = 1.0
#: How long the interchange gets to stop on SIGTERM before SIGKILL (s).
STOP_SECONDS = 5.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: the kernel sends SIGKILL when the guard dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _stop(child: subprocess.Popen) -> int:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
    return child.wait()


def main(argv: list[str]) -> int:
    driver = os.getppid()
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()
    command = argv or ["interchange.py"]
    # stdin is inherited: Parsl writes the interchange's configuration to it.
    child = subprocess.Popen(command, preexec_fn=_die_with_parent)

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            return child.wait(POLL_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        if os.getppid() != driver:  # the driver is gone: so is the reason to run
            print("parsl-es: driver gone; stopping its interchange", file=sys.stderr)
            return _stop(child)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
