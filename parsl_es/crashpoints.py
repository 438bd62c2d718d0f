"""Named moments at which tests and the chaos script kill the driver on purpose.

``PARSL_ES_CRASH_AT=NAME[:N[:SIGNAL]]`` makes the driver SIGKILL itself the
N-th time (default: the first) it passes the crash point NAME, so that "killed
while the ledger commits" or "killed while a merge writes" can be tested
exactly, not hoped for; with SIGNAL (``SIGINT``, ``SIGTERM``) it sends itself
that signal instead, as a user's Ctrl-C or a batch system would, and goes on.
Unset (always, in production), a crash point costs one truth test.

Crash points: ``ledger-commit`` (inside a transaction, before COMMIT),
``submitted`` (ranges marked running, some of their tasks submitted),
``merge-submitted`` (a merge in flight), ``merge-recorded`` (a merged file
recorded, its validation not yet); in set-up: ``campaign-read`` (the campaign
file read and checked), ``ledger-create`` (the new ledger's rows written, not
yet in place), ``site-loading`` (Parsl's executors being started).
"""

from __future__ import annotations

import os
import signal

ENV = "PARSL_ES_CRASH_AT"


def _parse(text: str) -> tuple[str, int, int] | None:
    if not text:
        return None
    name, _, rest = text.partition(":")
    nth, _, sig = rest.partition(":")
    return name, int(nth or 1), signal.Signals[sig] if sig else signal.SIGKILL


_PLAN = _parse(os.environ.get(ENV, ""))
_passed: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Signal this process if ``name`` is the crash point asked for, at its N-th passage."""
    if _PLAN is None or _PLAN[0] != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] == _PLAN[1]:
        os.kill(os.getpid(), _PLAN[2])
