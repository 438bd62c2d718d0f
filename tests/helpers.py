"""Helpers shared by the tests: campaign files and independent output checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
