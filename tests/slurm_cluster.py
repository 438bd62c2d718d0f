"""Is the local Slurm test cluster (tests/slurm/start-local-slurm.sh) usable?

``slurm_status()`` answers without raising, so tests can skip with its reason::

    ok, why = slurm_status()
    if not ok:
        pytest.skip(why)

Pure standard library: it only runs ``sinfo``.
"""

from __future__ import annotations

import shutil
import subprocess

START_HINT = "start tests/slurm/start-local-slurm.sh (as root)"
REQUIRED_PARTITIONS = ("cpu", "gpu")
# Node states (sinfo %T) in which a node takes or runs jobs.
USABLE_STATES = {"idle", "mixed", "allocated", "completing"}
# Flags sinfo appends to a state: * not responding, ~ powered off, # powering up,
# % powering down, ! pending power down, $ maintenance, @ pending reboot, ^ rebooting,
# - planned for a pending job.
STATE_FLAGS = "*~#%!$@^-"


def slurm_status(
    partitions: tuple[str, ...] = REQUIRED_PARTITIONS, timeout: float = 5.0
) -> tuple[bool, str]:
    """Whether the local cluster can run jobs in ``partitions``, and if not, why.

    Returns ``(True, summary)`` if ``sinfo`` answers within ``timeout`` seconds and every
    partition exists, is up and has a node that is idle, mixed, allocated or completing;
    otherwise ``(False, reason)``.
    """
    if shutil.which("sinfo") is None:
        return False, f"sinfo not installed: {START_HINT}"
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%N|%R|%a|%T|%E"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        why = f"sinfo did not answer within {timeout:g} s (slurmctld not running or unreachable)"
        return False, f"{why}: {START_HINT}"
    except OSError as exc:
        return False, f"sinfo could not run ({exc}): {START_HINT}"
    if proc.returncode != 0:
        err = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        return False, f"sinfo failed ({err}): {START_HINT}"

    # partition -> (availability, {node: state})
    found: dict[str, tuple[str, dict[str, str]]] = {}
    for line in proc.stdout.splitlines():
        fields = line.strip().split("|", 4)
        if len(fields) != 5:
            continue
        node, partition, avail, state, reason = fields
        if state.endswith("*"):
            reason = "not responding" if reason in ("", "none") else f"not responding, {reason}"
        if reason and reason != "none":
            state = f"{state} ({reason})"
        found.setdefault(partition, (avail, {}))[1][node] = state

    problems = []
    summary = []
    for partition in partitions:
        if partition not in found:
            known = ", ".join(sorted(found)) or "none"
            problems.append(f"partition {partition} not found (sinfo shows: {known})")
            continue
        avail, nodes = found[partition]
        if avail != "up":
            problems.append(f"partition {partition} is {avail}")
            continue
        usable = sorted(node for node, state in nodes.items() if _usable(state))
        if usable:
            summary.append(f"{partition}: {', '.join(usable)}")
        else:
            states = ", ".join(f"node {node} is {state}" for node, state in sorted(nodes.items()))
            problems.append(f"partition {partition} has no usable node ({states})")
    if problems:
        return False, "; ".join(problems)
    return True, "slurm ready (" + "; ".join(summary) + ")"


def _usable(state: str) -> bool:
    """``idle``/``mixed``/``allocated``/``completing`` without drain, down or flags."""
    state = state.split(" ", 1)[0]
    if not state or state[-1] in STATE_FLAGS:
        return False
    return all(part in USABLE_STATES for part in state.lower().split("+"))


if __name__ == "__main__":
    ok, why = slurm_status()
    print(why)
    raise SystemExit(0 if ok else 1)
