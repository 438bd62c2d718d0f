"""The work that runs on Parsl workers: simulate ranges, merge a group, validate.

These are plain functions; the dispatcher wraps them as Parsl python apps bound
to the executor of the node type a step runs on. They import nothing of a
particular payload: the payload is built on the worker from its registered name
and kept for the life of the worker process, so expensive initialisation
happens once per worker, not once per range.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.failures import classify, range_deadline
from parsl_es.payloads import Payload, PayloadError, make_payload
from parsl_es.ranges import EventRange, MergeGroup, RangePlan, merged_name
from parsl_es.records import (
    BundleResult,
    CampaignVerdict,
    MergedFile,
    MergeRecord,
    MergeVerdict,
    Plots,
    RangeResult,
    Where,
)
from parsl_es.states import OUTCOME_OF_FAILURE, Outcome

#: Range directories this worker process has made (or found): one mkdir each.
_MADE_DIRS: set[Path] = set()
# Payloads built in this worker process, by (name, params), and whether set up.
_PAYLOADS: dict[str, tuple[Payload, bool]] = {}


def payload_key(name: str, params: dict[str, Any]) -> str:
    return json.dumps([name, params], sort_keys=True)


def worker_payload(name: str, params: dict[str, Any], setup: bool = True) -> tuple[Payload, float]:
    """This worker's payload instance and the setup time spent on it now.

    ``setup=False`` is for merge and validation, which only read files and need
    no generator initialised.
    """
    key = payload_key(name, params)
    payload, ready = _PAYLOADS.get(key, (None, False))
    if payload is None:
        payload = make_payload(name, params)
    spent = 0.0
    if setup and not ready:
        t0 = time.time()
        payload.setup()
        spent = time.time() - t0
        ready = True
    _PAYLOADS[key] = (payload, ready)
    return payload, spent


def range_output_path(output_dir: Path, r: EventRange, attempt: int, suffix: str) -> Path:
    """One file per range attempt, in one directory per merge group.

    The attempt number in the name means a late result of an abandoned attempt
    can never overwrite the file the ledger recorded for a newer one.
    """
    name = f"{r.id}.attempt-{attempt}{suffix}"
    return group_dir(output_dir, r.merge_group) / name


def group_dir(output_dir: Path, group: int) -> Path:
    """The directory of one merge group's range files (and its merge attempts' files)."""
    return output_dir / "ranges" / f"group-{group:06d}"


def writable_dirs(output_dir: Path, open_groups: Iterable[int]) -> list[Path]:
    """Where a worker that died mid-write can have left a temporary file.

    The merged and validation files' directories, and the range files' directories
    of merge groups still open with a range dispatched. Not every group's: at 10^7
    ranges that would be 10^5 directories of range files read at each resume. A
    merged group's directory is written again only by a late attempt of a range
    already redone elsewhere; a file such a writer leaves half-written is never read.
    """
    return [
        output_dir / "merged",
        output_dir / "validation",
        *(group_dir(output_dir, g) for g in open_groups),
    ]


def merged_output_path(output_dir: Path, group: MergeGroup, suffix: str) -> Path:
    """The group's merged file, where the driver puts the current attempt's file."""
    return output_dir / "merged" / merged_name(group.campaign, group.index, suffix)


def merge_attempt_path(output_dir: Path, group: MergeGroup, attempt: int, suffix: str) -> Path:
    """Where one merge attempt writes, beside the group's range files.

    Only the driver renames it to ``merged_output_path``, and only while the
    attempt is current: a late attempt can never replace a recorded merged file.
    """
    name = f"{group.campaign}.merge-{group.index:06d}.attempt-{attempt}{suffix}"
    return group_dir(output_dir, group.index) / name


def pack(obj: Any) -> bytes:
    """Bulk data between driver and workers, pickled once by the C pickler.

    Parsl serialises arguments and results with dill, whose pure-Python pickler
    costs microseconds per element: thousands of ranges per second would spend
    the driver's CPU there. A ``bytes`` object costs dill nothing.
    """
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> Any:
    return pickle.loads(data)


def probe(
    seconds: float = 0.0, parsl_resource_specification: dict | None = None
) -> tuple[float, float, int]:
    """Sleep, and say when and in which worker process: for checks and benchmarks.

    ``parsl_resource_specification`` is Parsl's (the task's place in HTEX's queue)."""
    started = time.time()
    time.sleep(seconds)
    return started, time.time(), os.getpid()


def simulate_ranges(
    payload_name: str,
    params: dict[str, Any],
    plan: RangePlan,
    work: bytes,
    output_dir: str,
    timeout: float | None = None,
) -> bytes:
    """Simulate a bundle of ranges, ``pack``ed ``(index, attempt)`` pairs, each to its file.

    Returns a ``pack``ed ``BundleResult``: where the task ran (once) and the
    ``RangeResult`` of each range. A failing range does not fail the bundle: its
    result says what went wrong and what kind of failure it was. Only losing the
    worker loses the whole task. A range running longer than ``timeout`` seconds is
    stopped (see ``failures.range_deadline``).
    """
    where = Where.here()
    out = Path(output_dir)
    work = unpack(work)
    try:
        payload, setup_time = worker_payload(payload_name, params)
    except PayloadError as exc:
        now = time.time()
        failed = tuple(_failure(i, a, exc, now) for i, a in work)
        return pack(BundleResult(where=where, setup_seconds=0.0, results=failed))
    results = []
    for index, attempt in work:
        started = time.time()
        r = plan.range(index)
        if r.input is not None and not os.path.isabs(r.input):  # an earlier step's file
            r = dataclasses.replace(r, input=os.path.normpath(out / r.input))
        final = range_output_path(out, r, attempt, payload.suffix)
        try:
            if final.parent not in _MADE_DIRS:
                final.parent.mkdir(parents=True, exist_ok=True)
                _MADE_DIRS.add(final.parent)
            with range_deadline(timeout), fileio.atomic_path(final) as tmp:
                n_events = payload.simulate(r, tmp)
                if n_events != r.n_events:
                    raise PayloadError(f"payload wrote {n_events} events, expected {r.n_events}")
            results.append(
                RangeResult(
                    index=index,
                    attempt=attempt,
                    outcome=Outcome.DONE,
                    started=started,
                    finished=time.time(),
                    output=str(final.relative_to(out)),
                    size=final.stat().st_size,
                    checksum=fileio.adler32(final),
                    n_events=n_events,
                )
            )
        except Exception as exc:
            results.append(_failure(index, attempt, exc, started))
    reply = BundleResult(
        where=where,
        setup_seconds=setup_time,
        results=tuple(results),
        transform_starts=tuple(payload.take_transform_starts()),
    )
    return pack(reply)


def _failure(index: int, attempt: int, exc: BaseException, started: float) -> RangeResult:
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    kind = classify(exc)
    return RangeResult(
        index=index,
        attempt=attempt,
        outcome=OUTCOME_OF_FAILURE[kind],
        started=started,
        finished=time.time(),
        failure=kind,
        error=detail[:2000],
    )


class DamagedRangeFiles(Exception):
    """Range files of a merge group are missing or not what the ledger recorded.

    The driver redoes those ranges (not the payload's fault, not a merge
    failure), then merges the group again.
    """

    def __init__(self, problems: dict[int, str]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return f"{len(self.problems)} damaged range files: " + "; ".join(self.problems.values())


def merge_group(
    payload_name: str,
    params: dict[str, Any],
    group: MergeGroup,
    output_dir: str,
    known: bytes,
    attempt: int,
    parsl_resource_specification: dict | None = None,
) -> MergedFile:
    """Merge a complete group's range files into one file, in event order.

    Range records (``pack``ed: output, checksum) come from the ledger: the driver submits
    the merge once every range of the group is recorded done. Each file's
    checksum is verified before merging, so a damaged range file cannot slip
    into a merged output. The file is written under the attempt's own name
    (``merge_attempt_path``); the driver renames it into ``merged/``.
    ``parsl_resource_specification`` is Parsl's (the task's place in HTEX's queue).
    """
    started = time.time()
    records = {
        idx: {"output": output, "checksum": checksum} for idx, output, checksum in unpack(known)
    }
    missing = [i for i in group.range_indices if i not in records]
    if missing:
        raise RuntimeError(f"merge group {group.index}: ranges {missing} have no output")
    out_dir = Path(output_dir)
    paths = []
    damaged: dict[int, str] = {}
    for i in group.range_indices:
        rec = records[i]
        path = out_dir / rec["output"]
        try:
            actual = fileio.adler32(path)
        except FileNotFoundError:
            damaged[i] = f"range file {rec['output']} is missing"
            continue
        if actual != rec["checksum"]:
            damaged[i] = (
                f"range file {rec['output']} checksum {actual} != recorded {rec['checksum']}"
            )
        paths.append(path)
    if damaged:
        raise DamagedRangeFiles(damaged)
    payload, _ = worker_payload(payload_name, params, setup=False)
    final = merge_attempt_path(out_dir, group, attempt, payload.suffix)
    n_events = fileio.write_with(final, lambda tmp: payload.merge(paths, tmp))
    if n_events != group.n_events:
        final.unlink()
        raise RuntimeError(f"merge wrote {n_events} events, group has {group.n_events}")
    return MergedFile(
        group=group.index,
        attempt=attempt,
        output=str(final.relative_to(out_dir)),
        size=final.stat().st_size,
        checksum=fileio.adler32(final),
        n_events=n_events,
        started=started,
        finished=time.time(),
        where=Where.here(),
    )


def validate_merge(
    payload_name: str,
    params: dict[str, Any],
    group: MergeGroup,
    output_dir: str,
    merged: MergedFile,
    plan: Any = None,
    parsl_resource_specification: dict | None = None,
) -> MergeVerdict:
    """Check one merged file and fill its physics histograms.

    ``plan`` (a chain over a dataset) says which of the dataset's event numbers the
    group holds; otherwise they are the group's contiguous numbers.
    ``parsl_resource_specification`` is Parsl's (the task's place in HTEX's queue).
    """
    from parsl_es import validation

    started = time.time()
    payload, _ = worker_payload(payload_name, params, setup=False)
    report = validation.validate_merged_file(payload, group, Path(output_dir), merged, plan)
    return MergeVerdict(
        group=group.index,
        passed=report["passed"],
        problems=tuple(report["problems"]),
        n_events=report["n_events"],
        started=started,
        finished=time.time(),
        where=Where.here(),
    )


def validate_campaign(
    payload_name: str,
    params: dict[str, Any],
    plan: RangePlan,
    output_dir: str,
    merges: list[MergeRecord],
    inputs: list[Any] = (),
) -> CampaignVerdict:
    """The campaign-wide check: every event exactly once across merged files.

    The merge records (``Ledger.merge_records``) come from the driver's ledger as an
    argument: workers on other nodes cannot safely open an SQLite file that the driver
    writes.
    """
    from parsl_es import validation

    started = time.time()
    payload, _ = worker_payload(payload_name, params, setup=False)
    report = validation.validate_campaign_outputs(
        payload, plan, Path(output_dir), merges, with_plots=False
    )
    return CampaignVerdict(
        passed=report["passed"],
        problems=tuple(report["problems"]),
        bad_groups={int(g): p for g, p in report.get("bad_groups", {}).items()},
        report=report,
        started=started,
        finished=time.time(),
        where=Where.here(),
    )


def plot_campaign(
    payload_name: str,
    params: dict[str, Any],
    plan: RangePlan,
    output_dir: str,
    merges: list[MergeRecord],
    inputs: list[Any] = (),
) -> Plots:
    """The campaign's summed physics histograms as PNGs, beside its validation."""
    from parsl_es.physics_plots import campaign_histograms

    started = time.time()
    payload, _ = worker_payload(payload_name, params, setup=False)
    plots = campaign_histograms(payload, plan, Path(output_dir), merges)
    return Plots(files=tuple(plots), started=started, finished=time.time(), where=Where.here())
