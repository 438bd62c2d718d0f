"""When the allocation ends: ``--end``, ``--walltime``, or Slurm's own record of the job.

Read once by the front ends before a run starts; the engine only receives the
resulting epoch time (``allocation_end``) and decides what still fits.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import time
from datetime import datetime

from parsl_es.errors import UserError, shown
from parsl_es.sites import walltime_seconds


def parse_end(text: str) -> float:
    """An end time given as epoch seconds or an ISO date-time (local time if no zone)."""
    try:
        when = float(text)
    except ValueError:
        try:
            when = datetime.fromisoformat(text).timestamp()
        except (ValueError, OverflowError):
            raise UserError(
                f"--end {shown(text)}: expected epoch seconds or an ISO time like 2026-11-22T18:30"
            ) from None
    if not _a_date(when):
        raise UserError(f"--end {shown(text)}: not a time this machine's clock can reach")
    return when


def _a_date(when: float) -> bool:
    """Whether ``when`` (epoch seconds) is a finite time with a date (inf and nan are not)."""
    if not math.isfinite(when):
        return False
    try:
        datetime.fromtimestamp(when)
    except (OverflowError, OSError, ValueError):
        return False
    return True


def allocation_end(
    walltime: str | None = None, end: str | None = None, now: float | None = None
) -> tuple[float | None, str]:
    """The allocation's end (epoch seconds) and where that came from; (None, ...) if unbounded."""
    now = time.time() if now is None else now
    if end is not None:
        return parse_end(end), "--end"
    if walltime is not None:
        try:
            return now + walltime_seconds(walltime), "--walltime"
        except ValueError as exc:
            raise UserError(f"--walltime: {exc}") from None
    env_end = os.environ.get("SLURM_JOB_END_TIME")
    if env_end:
        try:
            if _a_date(float(env_end)):
                return float(env_end), "SLURM_JOB_END_TIME"
        except ValueError:
            pass
    job = os.environ.get("SLURM_JOB_ID")
    if job and shutil.which("squeue"):
        found = _squeue_end(job)
        if found is not None:
            return found, f"squeue (job {job})"
    return None, "no allocation end known"


def _squeue_end(job: str) -> float | None:
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%e"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        return datetime.fromisoformat(out).timestamp() if out else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
