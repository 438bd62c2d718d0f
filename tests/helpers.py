"""Helpers shared by the tests: campaign files and independent output checks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import psutil
import uproot
import yaml

from parsl_es.ledger import Ledger
from parsl_es.states import RangeState


def write_campaign(directory: Path, name: str = "c", **fields) -> Path:
    """A campaign file with small defaults, overridden by ``fields``."""
    data = {
        "name": name,
        "events": 40,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 11,
        "payload": {"name": "emulate"},
    }
    data.update(fields)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def merged_event_numbers(output: Path) -> list[np.ndarray]:
    """Event numbers of every merged file, read with uproot alone (not the ledger)."""
    out = []
    for f in sorted((output / "merged").iterdir()):
        if f.suffix == ".npy":  # the emulate payload's npy output
            out.append(np.load(f)["event_number"])
            continue
        with uproot.open(f) as root:
            out.append(root["events"]["event_number"].array(library="np"))
    return out


def assert_every_event_once(output: Path, first: int, events: int) -> None:
    per_file = merged_event_numbers(output)
    for numbers in per_file:
        assert np.all(np.diff(numbers) == 1), "merged file not in event order"
    found = np.sort(np.concatenate(per_file))
    assert np.array_equal(found, np.arange(first, first + events))


def done_ranges(output: Path) -> dict[int, int]:
    """Ranges done or merged, with how many attempts each has had."""
    led = Ledger.open(output / "ledger.sqlite", readonly=True)
    try:
        return {r.index: r.attempts for r in led.ranges([RangeState.DONE, RangeState.MERGED])}
    finally:
        led.close()


# --- Parsl processes left behind -------------------------------------------------------


def _is_interchange(cmd: str) -> bool:
    return "HTEX interchange" in cmd or cmd.endswith("interchange.py") or "/interchange.py " in cmd


def logged_interchange_pids(run_dir: Path) -> set[int]:
    """PIDs of the interchanges that ran in ``run_dir``, from their own logs.

    Parsl's interchange logs ``MainProcess-<pid>`` on every line; the log stays when
    the process is gone, so this records which PIDs to watch even after a crash.
    """
    pids = set()
    for log in Path(run_dir).rglob("interchange.log"):
        with open(log, errors="replace") as f:
            found = re.search(r"MainProcess-(\d+)", f.readline())
        if found:
            pids.add(int(found.group(1)))
    return pids


def parsl_processes_under(base: str | Path, pools: bool = True) -> list[str]:
    """Interchanges, their guards and worker pools of Parsl runs under ``base``, still running.

    An interchange's command line is just ``parsl: HTEX interchange`` (it reads its
    configuration from stdin) and its parent is its guard, never init: it is
    recognised by the log it holds open in its run directory, or by its PID in
    that log. Worker pools name their run directory in their command line.
    """
    base = str(Path(base).resolve())
    logged = logged_interchange_pids(Path(base))
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        try:
            if pools and "process_worker_pool" in cmd and base in cmd:
                found.append(f"{p.pid}: {cmd}")
            elif _is_interchange(cmd) and (
                p.pid in logged or any(f.path.startswith(base) for f in p.open_files())
            ):
                found.append(f"{p.pid}: {cmd}")
                parent = p.parent()
                if parent is not None and "interchange_guard" in " ".join(parent.cmdline()):
                    found.append(f"{parent.pid}: {' '.join(parent.cmdline())}")
        except psutil.Error:  # gone meanwhile, or not ours to look at
            continue
    return found


def assert_usage_error(result, *needles: str) -> None:
    """A CLI refusal of bad input: exit 2, one line naming what is wrong, no traceback."""
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, text
