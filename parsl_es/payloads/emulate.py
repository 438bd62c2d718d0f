"""The ``emulate`` payload: no physics, the same files and the same engine path.

Per event it sleeps and/or burns CPU for a configurable time and writes the event
numbers and a value drawn from the event's own seed, so tests, fault injection
and benchmarks run thousands of ranges through exactly the code physics uses.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from parsl_es.payloads.base import FatalPayloadError, PayloadError, PayloadParams
from parsl_es.payloads.rootfiles import RootTreePayload
from parsl_es.ranges import EventRange, event_seed


class EmulateParams(PayloadParams):
    seconds_per_event: float = Field(0.0, ge=0, description="wall time slept per event")
    cpu_seconds_per_event: float = Field(0.0, ge=0, description="CPU time burnt per event")
    run_number: int = Field(1, ge=0)
    fail_events: list[int] = Field(
        default_factory=list,
        description="event numbers whose range raises a (transient) error: fault injection",
    )
    fail_times: int = Field(
        1, ge=0, description="how many attempts of a range holding a fail_event fail"
    )
    hang_events: list[int] = Field(
        default_factory=list,
        description="event numbers whose range hangs (fault injection for range timeouts)",
    )
    hang_times: int = Field(1, ge=0, description="how many attempts of such a range hang")
    hang_mode: Literal["sleep", "blocked"] = Field(
        "sleep",
        description="sleep: an ordinary hang; blocked: a hang deaf to signals, as in C code",
    )
    output_format: Literal["root", "npy"] = Field(
        "root",
        description="root: an events TTree per range, like physics; npy: a small numpy file, "
        "so that benchmarks of the engine are not benchmarks of ROOT writing",
    )
    accelerated_speedup: float = Field(
        1.0,
        ge=1.0,
        description="on a worker that owns an accelerator (CUDA_VISIBLE_DEVICES set), "
        "events take this many times less time: emulates a GPU build of a payload",
    )


class EmulatePayload(RootTreePayload):
    """Any step of a chain: it makes its own events, or reads an earlier step's files.

    With an input it reads the file's event numbers and checks that the range's
    events are the file's at the range's position: the chain's arithmetic,
    checked on real files by every range.
    """

    name = "emulate"
    Params = EmulateParams
    reads = "*"

    def __init__(self, params: EmulateParams) -> None:
        super().__init__(params)
        self.params: EmulateParams = params
        self._failures: dict[int, int] = {}
        self.npy = params.output_format == "npy"
        if self.npy:
            self.suffix = ".npy"  # type: ignore[misc]

    def simulate(self, event_range: EventRange, output: Path) -> int:
        p = self.params
        self._inject_failure(event_range, output)
        if event_range.input is not None:
            self._check_input(event_range)
        speedup = p.accelerated_speedup if os.environ.get("CUDA_VISIBLE_DEVICES") else 1.0
        numbers = np.arange(event_range.first_event, event_range.last_event + 1, dtype=np.int64)
        values = np.empty(len(numbers), dtype=np.float64)
        for i, number in enumerate(numbers):
            rng = np.random.default_rng(event_seed(event_range.campaign_seed, int(number)))
            values[i] = rng.exponential(10.0)
            if p.cpu_seconds_per_event:
                _burn(p.cpu_seconds_per_event / speedup)
            if p.seconds_per_event:
                time.sleep(p.seconds_per_event / speedup)
        columns = {
            "event_number": numbers,
            "run_number": np.full(len(numbers), p.run_number, dtype=np.int32),
            "value": values,
        }
        if self.npy:
            table = np.empty(len(numbers), dtype=NPY_DTYPE)
            for name, column in columns.items():
                table[name] = column
            _save(output, table)
        else:
            from parsl_es import rootio  # uproot loads in ~0.3 s: only where used

            rootio.write_events(output, columns)
        return len(numbers)

    # npy outputs: the same three columns as a structured array
    def merge(self, inputs: Sequence[Path], output: Path) -> int:
        if not self.npy:
            return super().merge(inputs, output)
        table = np.concatenate([np.load(p) for p in inputs])
        _save(output, table)
        return len(table)

    def event_numbers(self, path: Path) -> np.ndarray:
        return np.load(path)["event_number"] if self.npy else super().event_numbers(path)

    def content_hash(self, path: Path) -> str:
        if not self.npy:
            return super().content_hash(path)
        return hashlib.sha256(np.ascontiguousarray(np.load(path)).tobytes()).hexdigest()

    def _check_input(self, r: EventRange) -> None:
        path = Path(r.input or "")
        try:
            numbers = self.event_numbers(path)
        except OSError as exc:
            raise PayloadError(f"cannot read the input file {path}: {exc}") from None
        held = numbers[r.skip : r.skip + r.n_events]
        if not np.array_equal(held, np.arange(r.first_event, r.last_event + 1)):
            raise FatalPayloadError(
                f"range {r.id}: events {r.skip}..{r.skip + r.n_events - 1} of {path.name} are "
                f"not events {r.first_event}..{r.last_event}"
            )

    def _inject_failure(self, event_range: EventRange, output: Path) -> None:
        """Fail ``fail_times`` attempts of ranges holding a ``fail_events`` number, and
        hang ``hang_times`` attempts of ranges holding a ``hang_events`` number."""
        p = self.params
        n = _fault_due(event_range, output, "hang", p.hang_events, p.hang_times)
        if n is not None:
            _hang(p.hang_mode)
        n = _fault_due(event_range, output, "fail", p.fail_events, p.fail_times)
        if n is not None:
            raise PayloadError(f"injected failure in range {event_range.id} (attempt {n + 1})")

    def histograms(self, path: Path) -> dict[str, Any]:
        if self.npy:
            values = np.load(path)["value"]
        else:
            from parsl_es import rootio

            values = rootio.read_events(path, filter_name=["value"])["value"]
        import hist

        h = hist.Hist(hist.axis.Regular(50, 0, 50, name="value", label="emulated value"))
        h.fill(value=values)
        return {"value": h}


NPY_DTYPE = np.dtype([("event_number", "<i8"), ("run_number", "<i4"), ("value", "<f8")])


def _save(path: Path, table: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append .npy to a name
        np.save(f, table, allow_pickle=False)


def _fault_due(
    event_range: EventRange, output: Path, kind: str, events: list[int], times: int
) -> int | None:
    """The number of earlier injected faults of this kind, if one is due now.

    Counted through marker files beside the output, so the count survives the
    worker process that failed or hung.
    """
    if not any(e in event_range.event_numbers for e in events):
        return None
    marker_dir = output.parent / f".emulate-{kind}"
    marker_dir.mkdir(exist_ok=True)
    n = len(list(marker_dir.glob(f"{event_range.id}.*")))
    if n >= times:
        return None
    (marker_dir / f"{event_range.id}.{n}").touch()
    return n


def _hang(mode: str) -> None:
    """Never return: sleep, or (``blocked``) sleep with SIGALRM blocked, as C code would."""
    if mode == "blocked":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    while True:
        time.sleep(3600)


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    x = 0.0
    while time.process_time() < end:
        for _ in range(1000):
            x = x * 1.0000001 + 1.0
