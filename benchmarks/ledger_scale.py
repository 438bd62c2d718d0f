"""The ledger at 10^7 ranges: ``es-run status``, resume start-up and driver memory.

    python -m benchmarks.ledger_scale [--ranges 10000000] [--baseline 100000] [--dir /tmp]

Builds two real ledgers in the same run, the large one and a baseline of
``--baseline`` ranges with the same shape, and measures on each, every figure
in a fresh Python process (so peak RSS is that operation's alone):

* ``es-run status DIR`` wall time: the real CLI in a subprocess (median of 3),
  its CPU time and peak RSS from ``wait4`` (CPU time shows what the wall time is
  made of on a shared machine);
* ``Ledger.summary()`` in process (read-only open + summary, median of 3);
* resume start-up: a read-write ``Ledger.open`` (the migration, if any),
  ``Dispatcher(...)`` on the simulated backend, ``Dispatcher._load()`` (what a
  resume does before its loop: ``reset_for_resume``, removing temporary files,
  ``resume_state``, every step's ``load``), then one top-up of every step (what
  the loop does first) up to the first submitted task. Timed directly rather
  than through ``run()``: ``run()`` would go on running the campaign. The
  ledger is restored from a pristine copy before each resume (a resume writes).

How the ledger is built. ``Ledger.create`` makes the ledger (schema, meta,
merge-group rows) exactly as ``es-run submit`` does; then one ``INSERT ...
SELECT`` over a recursive CTE writes the range rows in index order, with the
columns and values the engine's write path (``ranges.start_ranges``,
``record``, ``merges.finish_merge``) leaves for each state (a done range: its
task, times, output ``ranges/group-NNNNNN/<id>.attempt-1.npy``, size, checksum,
events; a failed one: failures, error, where). Tasks (one per 10 ranges) and
failed/lost attempts are written the same way, the merge groups' columns by an
``UPDATE`` as ``finish_merge`` and ``record_verdict`` leave them. Going through
``record()`` for 10^7 ranges would take tens of minutes and measure the write
path, which is ``benchmarks.overhead``'s job.

The shape (fractions of the merge groups, 100 ranges per group, in index order
as the engine works through them): 98.3% merged and validated (the last 0.1% of
those not yet validated); 0.1% with every range done and their merge running
when the driver stopped; 0.5% in flight: per group 80 done, 8 running, 5 failed,
1 fatal and 6 with a row but ready (lost attempts); 1.1% never started (no
rows). The rows of merged ranges say ``done``, as the engine leaves them from ledger
version 7 on. 1% of merged ranges had a lost attempt before succeeding. Files exist
only where resume looks: the merged file of every done group and the range file
of every done (unmerged) range; 3 merged files and 10 range files are missing,
as a crash could leave them. On tmpfs where writable, so the disk is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import scratch

ES_RUN = str(Path(sys.executable).parent / "es-run")
RANGES_PER_MERGE = 100
EVENTS_PER_RANGE = 10
CAMPAIGN = "scale"
SUFFIX = ".npy"
T0 = 1_700_000_000.0

_RANGE_ROWS = """
WITH RECURSIVE r(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM r WHERE i + 1 < :top),
s(i, g, k, st) AS (
    SELECT i, i / :rpm, i % :rpm,
        CASE
            WHEN i / :rpm < :busy_from THEN 'merged'
            WHEN i / :rpm < :active_from THEN 'done'
            WHEN i % :rpm < 80 THEN 'done'
            WHEN i % :rpm < 88 THEN 'running'
            WHEN i % :rpm < 93 THEN 'failed'
            WHEN i % :rpm < 94 THEN 'fatal'
            ELSE 'ready'
        END
    FROM r
)
INSERT INTO ranges (idx, id, first_event, last_event, merge_group, seed, state, attempts,
    failures, lost, node_type, host, worker, slurm_job, accelerator, started, finished,
    output, size, checksum, n_events, error, task)
SELECT i, printf('%s-%d-%d', :campaign, i * :epr, i * :epr + :epr - 1), i * :epr,
    i * :epr + :epr - 1, g, NULL, CASE st WHEN 'merged' THEN 'done' ELSE st END,
    CASE WHEN st = 'ready' THEN 1 WHEN i % 100 = 7 AND st = 'merged' THEN 2 ELSE 1 END,
    CASE st WHEN 'failed' THEN 1 WHEN 'fatal' THEN 3 ELSE 0 END,
    CASE WHEN st = 'ready' OR (i % 100 = 7 AND st = 'merged') THEN 1 ELSE 0 END,
    'cpu',
    CASE WHEN st IN ('failed', 'fatal') THEN printf('node%03d', i % 500) END,
    CASE WHEN st IN ('failed', 'fatal') THEN printf('node%03d/w%d', i % 500, i % 64) END,
    CASE WHEN st IN ('failed', 'fatal') THEN '4242' END,
    NULL,
    :t0 + i * 0.01,
    CASE WHEN st IN ('merged', 'done', 'failed', 'fatal') THEN :t0 + i * 0.01 + 30.0 END,
    CASE WHEN st IN ('merged', 'done')
        THEN printf('ranges/group-%06d/%s-%d-%d.attempt-%d%s', g, :campaign, i * :epr,
            i * :epr + :epr - 1, CASE WHEN i % 100 = 7 AND st = 'merged' THEN 2 ELSE 1 END,
            :suffix) END,
    CASE WHEN st IN ('merged', 'done') THEN 64 + i % 64 END,
    CASE WHEN st IN ('merged', 'done') THEN printf('%08x', i * 2654435761 % 4294967296) END,
    CASE WHEN st IN ('merged', 'done') THEN :epr END,
    CASE st WHEN 'failed' THEN 'PayloadError: transient' WHEN 'fatal'
        THEN 'FatalPayloadError: bad parameters' WHEN 'ready' THEN 'WorkerLost' END,
    CASE WHEN st IN ('merged', 'done') THEN i / 10 + 1 END
FROM s
"""

_TASK_ROWS = """
WITH RECURSIVE t(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM t WHERE i + 1 <= :tasks)
INSERT INTO tasks (task, node_type, host, worker, slurm_job, accelerator, pool, block,
    recorded, setup)
SELECT i, 'cpu', printf('node%03d', i % 500), printf('node%03d/w%d', i % 500, i % 64), '4242',
    NULL, 'cpu', printf('%d', i % 500), :t0 + i * 0.1, CASE WHEN i <= 32000 THEN 1.5 END
FROM t
"""

_ATTEMPT_ROWS = """
INSERT INTO attempts (range_idx, attempt, outcome, node_type, host, worker, slurm_job,
    accelerator, started, finished, error)
SELECT idx, 1, CASE WHEN state IN ('done', 'ready') THEN 'lost'
        WHEN state = 'fatal' THEN 'fatal' ELSE 'failed' END,
    'cpu', printf('node%03d', idx % 500), printf('node%03d/w%d', idx % 500, idx % 64), '4242',
    NULL, started, started + 5.0, COALESCE(error, 'WorkerLost')
FROM ranges WHERE (merge_group < :busy_from AND idx % 100 = 7)
    OR state IN ('failed', 'fatal', 'ready')
"""

_MERGE_COLUMNS = """
UPDATE merges SET state = :state, attempts = 1, node_type = 'cpu', host = 'node000',
    worker = 'node000/w0', started = :t0 + group_idx, finished = :t0 + group_idx + 20.0,
    duration = 20.0, output = printf('merged/%s.merge-%06d%s', :campaign, group_idx, :suffix),
    size = 4096 + group_idx % 512, checksum = printf('%08x', group_idx * 40503 % 4294967296),
    n_events = (last_range - first_range + 1) * :epr,
    validation = CASE WHEN group_idx < :validated THEN 'passed' END,
    validated_at = CASE WHEN group_idx < :validated THEN :t0 + group_idx + 40.0 END,
    validation_worker = CASE WHEN group_idx < :validated THEN 'node001/w0' END,
    validation_started = CASE WHEN group_idx < :validated THEN :t0 + group_idx + 30.0 END
WHERE group_idx < :busy_from
"""


def shape(n_ranges: int) -> dict[str, int]:
    """The group boundaries of the layout (see the module docstring)."""
    groups = n_ranges // RANGES_PER_MERGE

    def frac(x: float) -> int:
        return max(1, round(groups * x))

    never = frac(0.011)
    active = frac(0.005)
    busy = frac(0.001)
    active_from = groups - never - active
    busy_from = active_from - busy
    return {
        "groups": groups,
        "busy_from": busy_from,  # merged below this group
        "active_from": active_from,  # done, merge running below this group
        "untouched_from": groups - never,  # no rows from this group on
        "validated": busy_from - frac(0.001),
        "top": (groups - never) * RANGES_PER_MERGE,
    }


def build(out: Path, n_ranges: int) -> dict[str, float]:
    """A ledger of ``n_ranges`` ranges, and the files resume checks; returns timings."""
    from parsl_es.campaign import campaign_from_dict
    from parsl_es.ledger import LEDGER_NAME, Ledger

    t0 = time.perf_counter()
    spec = campaign_from_dict(
        {
            "name": CAMPAIGN,
            "events": n_ranges * EVENTS_PER_RANGE,
            "first_event": 0,
            "events_per_range": EVENTS_PER_RANGE,
            "events_per_merge": EVENTS_PER_RANGE * RANGES_PER_MERGE,
            "seed": 5,
            "payload": {"name": "emulate", "output_format": "npy"},
        }
    )
    out.mkdir(parents=True)
    for sub in ("ranges", "merged", "validation", "logs"):
        (out / sub).mkdir()
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan).close()
    s = shape(n_ranges)
    numbers = {
        "rpm": RANGES_PER_MERGE,
        "epr": EVENTS_PER_RANGE,
        "campaign": CAMPAIGN,
        "suffix": SUFFIX,
        "t0": T0,
        **s,
    }
    conn = sqlite3.connect(out / LEDGER_NAME, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    conn.execute(_RANGE_ROWS, numbers)
    conn.execute(_TASK_ROWS, {"tasks": s["top"] // 10, "t0": T0})
    conn.execute(_ATTEMPT_ROWS, {"busy_from": numbers["busy_from"]})
    conn.execute(_MERGE_COLUMNS, numbers | {"state": "done"})
    conn.execute(
        _MERGE_COLUMNS.replace(
            "WHERE group_idx < :busy_from",
            "WHERE group_idx >= :busy_from AND group_idx < :active_from",
        ),
        numbers | {"state": "running", "validated": -1},
    )
    conn.execute(
        "UPDATE merges SET output = NULL, size = NULL, checksum = NULL, n_events = NULL, "
        "finished = NULL, duration = NULL, host = NULL, worker = NULL WHERE state = 'running'"
    )
    conn.execute("COMMIT")
    t_rows = time.perf_counter() - t0
    # The files resume looks at: merged files of done groups, range files of done ranges
    # not merged (a merged range's row says done too: its group's merge is done).
    made = 0
    missing_merged = {0, s["busy_from"] // 2, s["busy_from"] - 1}
    for group, rel, size in conn.execute(
        "SELECT group_idx, output, size FROM merges WHERE state = 'done'"
    ):
        if group not in missing_merged:
            _write(out / rel, size)
            made += 1
    done = conn.execute(
        "SELECT idx, output, size FROM ranges WHERE state = 'done' AND merge_group >= ?",
        (s["busy_from"],),
    ).fetchall()
    missing_ranges = {idx for idx, _, _ in done[:: max(1, len(done) // 10)][:10]}
    dirs: set[Path] = set()
    for idx, rel, size in done:
        if idx in missing_ranges:
            continue
        path = out / rel
        if path.parent not in dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            dirs.add(path.parent)
        _write(path, size)
        made += 1
    conn.close()
    return {
        "build_rows_seconds": round(t_rows, 1),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "files": made,
        "ledger_mb": round((out / LEDGER_NAME).stat().st_size / 2**20),
    }


_PAYLOAD = b"\0" * 8192


def _write(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.write(_PAYLOAD[:size])


# --- measurements, each in a process of its own ---------------------------------------------
def measure_summary(out: Path) -> dict[str, float]:
    from parsl_es.ledger import LEDGER_NAME, Ledger

    t0 = time.perf_counter()
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        summary = ledger.summary()
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "ranges": summary.ranges,
        "events_done": summary.events_done,
        "peak_rss_mb": peak_rss_mb(),
    }


def measure_resume(out: Path) -> dict[str, float]:
    from parsl_es.backends.simulated import SimNodeType, SimulatedBackend
    from parsl_es.engine.dispatcher import Dispatcher, Settings
    from parsl_es.engine.steps import Placement
    from parsl_es.ledger import LEDGER_NAME, Ledger

    sim = SimulatedBackend({"cpu": SimNodeType(workers=64, range_seconds=1.0)})
    first: list[float] = []
    submit = sim.submit

    def timed_submit(node_type, call):  # type: ignore[no-untyped-def]
        if not first:
            first.append(time.perf_counter())
        return submit(node_type, call)

    sim.submit = timed_submit  # type: ignore[method-assign]
    t0 = time.perf_counter()
    ledger = Ledger.open(out / LEDGER_NAME)
    t_open = time.perf_counter()
    spec = ledger.campaign_json()["payload"]
    d = Dispatcher(
        ledger=ledger,
        backend=sim,
        output_dir=out,
        payload=(spec.pop("name"), spec),
        placement=Placement(simulate=["cpu"], merge="cpu", validate="cpu"),
        settings=Settings(attempts=3),
    )
    t_built = time.perf_counter()
    d._load()
    t_loaded = time.perf_counter()
    now = sim.now()
    for step in d._top_up_order:
        step.top_up(now)
    t_topped = time.perf_counter()
    submitted = dict(sim.submitted)
    ledger.close()
    return {
        "open_seconds": t_open - t0,
        "load_seconds": t_loaded - t_built,
        "to_first_submit_seconds": (first[0] if first else t_topped) - t0,
        "to_topped_up_seconds": t_topped - t0,
        "submitted": submitted,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (MB).

    ``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``: Linux carries a child's
    ``ru_maxrss`` over ``exec`` from the image it was forked from, so every child of
    this benchmark reported at least this process's own size (50 MB at 10^5 ranges,
    64 MB after building 10^7), whatever it used itself.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc/self/status")


#: ``es-run status DIR`` in this interpreter, its peak memory printed last (the CLI's
#: own entry point; ``SystemExit`` is how typer ends).
_STATUS_WITH_PEAK = (
    "import json, sys\n"
    "from benchmarks.ledger_scale import peak_rss_mb\n"
    "from parsl_es.cli.main import main\n"
    "sys.argv = ['es-run', 'status', sys.argv[1]]\n"
    "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
    "print(json.dumps({'peak_rss_mb': peak_rss_mb()}))\n"
)


def _child(what: str, out: Path) -> dict:
    """Run one measurement in a fresh interpreter; add its peak RSS (MB)."""
    cmd = [sys.executable, "-m", "benchmarks.ledger_scale", "--measure", what, "--out", str(out)]
    return _run(cmd, parse=True)


def _run(cmd: list[str], parse: bool) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {stderr.decode()[-2000:]}")
    data = json.loads(stdout.decode().strip().splitlines()[-1]) if parse else {}
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_seconds": wall, "cpu_seconds": cpu} | data


def measure_all(out: Path, repeat: int) -> dict[str, float]:
    from parsl_es.ledger import LEDGER_NAME

    ledger = out / LEDGER_NAME
    status_cli = [_run([ES_RUN, "status", str(out)], parse=False) for _ in range(repeat)]
    status_peak = _run([sys.executable, "-c", _STATUS_WITH_PEAK, str(out)], parse=True)
    summary = [_child("summary", out) for _ in range(repeat)]
    pristine = out / "ledger.pristine"
    shutil.copyfile(ledger, pristine)
    resumes = []
    for _ in range(repeat):
        for extra in ("-wal", "-shm"):
            Path(str(ledger) + extra).unlink(missing_ok=True)
        shutil.copyfile(pristine, ledger)
        resumes.append(_child("resume", out))
    pristine.unlink()

    def med(rows: list[dict], key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    return {
        "status_cli_seconds": med(status_cli, "wall_seconds"),
        "status_cli_cpu_seconds": med(status_cli, "cpu_seconds"),
        "status_cli_rss_mb": round(status_peak["peak_rss_mb"], 1),
        "summary_seconds": med(summary, "seconds"),
        "summary_rss_mb": med(summary, "peak_rss_mb"),
        "resume_open_seconds": med(resumes, "open_seconds"),
        "resume_load_seconds": med(resumes, "load_seconds"),
        "resume_first_submit_seconds": med(resumes, "to_first_submit_seconds"),
        "resume_cpu_seconds": med(resumes, "cpu_seconds"),
        "resume_rss_mb": med(resumes, "peak_rss_mb"),
        "resume_submitted": resumes[0]["submitted"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranges", type=int, default=10_000_000)
    p.add_argument("--baseline", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None, help="where to build (default: scratch)")
    p.add_argument("--measure", choices=("summary", "resume"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        fn = measure_summary if args.measure == "summary" else measure_resume
        print(json.dumps(fn(args.out)), flush=True)
        return
    figures: dict[str, dict] = {}
    with scratch("ledger-scale-") as tmp:
        base = args.dir or tmp
        for label, n in (("baseline", args.baseline), ("large", args.ranges)):
            out = Path(base) / f"ledger-{n}"
            if out.exists():
                shutil.rmtree(out)
            built = build(out, n)
            print(f"{label}: built {n:,} ranges {built}", file=sys.stderr, flush=True)
            figures[label] = {"ranges": n, **built, **measure_all(out, args.repeat)}
            print(f"{label}: {figures[label]}", file=sys.stderr, flush=True)
            shutil.rmtree(out)
    b, big = figures["baseline"], figures["large"]
    print(
        f"status (CLI) {big['status_cli_seconds']} s (baseline {b['status_cli_seconds']} s), "
        f"summary() {big['summary_seconds']} s, resume to first submit "
        f"{big['resume_first_submit_seconds']} s (baseline {b['resume_first_submit_seconds']} s), "
        f"peak RSS status {big['status_cli_rss_mb']} MB / resume {big['resume_rss_mb']} MB "
        f"(baseline {b['status_cli_rss_mb']} / {b['resume_rss_mb']} MB)"
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
