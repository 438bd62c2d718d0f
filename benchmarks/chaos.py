"""Chaos: a campaign on the local site while workers, worker pools and the driver are killed.

A real ``es-run`` driver runs a campaign of fast emulated ranges. While it runs,
this script kills, at moments tied to the campaign's progress:

- worker processes (SIGKILL): the range in flight is lost with its worker;
- whole worker pools (SIGKILL to the pool and its workers): a node failure;
- the driver itself (SIGKILL to the driver alone), after which ``es-run resume``
  takes over;
- a pool's multiprocessing helper process: the pool wedges (it keeps sending
  heartbeats, so Parsl never calls it lost) and the driver must notice;

and the campaign itself holds hung ranges (``hang_events``). At the end the
merged files are read back with uproot, independently of the ledger, and one
line of figures is printed (then the same as JSON):

    ranges, kills of each kind, events lost, events duplicated, ranges done
    before a kill that were run again, ranges in flight at driver kills

    python -m benchmarks.chaos                 # 3,000 ranges, >= 20 worker kills, 3 driver kills
    python -m benchmarks.chaos --quick         # 300 ranges, a few of each
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import uproot
import yaml

ES_RUN = str(Path(sys.executable).parent / "es-run")


@dataclass
class Plan:
    ranges: int = 3000
    seconds_per_event: float = 0.02
    events_per_merge: int = 100
    worker_kills: int = 24
    pool_kills: int = 2
    driver_kills: int = 3
    wedges: int = 1
    hung_ranges: int = 2
    seed: int = 1
    # the campaign's range_timeout (hung ranges and wedged pools are noticed from these)
    timeout_floor: float = 3
    timeout_ceiling: float = 10
    timeout_slack: float = 10
    # --set overrides of the local site for the drivers, e.g. shorter heartbeats
    site_overrides: tuple[str, ...] = ()
    # the campaign's payload instead of emulate (hung ranges need emulate's hang_events),
    # e.g. the command payload in service mode, whose transforms can then be killed
    payload: dict | None = None
    transform_kills: int = 0


#: The figure counting each kind of injected damage.
INJECTED = {
    "worker": "worker_kills",
    "pool": "pool_kills",
    "wedge": "wedges_injected",
    "transform": "transform_kills",
}


@dataclass
class Figures:
    ranges: int = 0
    worker_kills: int = 0
    pool_kills: int = 0
    driver_kills: int = 0
    wedges_injected: int = 0  # pools this script wedged
    transform_kills: int = 0  # service mode: transforms this script SIGKILLed
    transform_starts: int = 0  # service mode: transform starts the ledger recorded
    transform_workers: int = 0  # ... on this many distinct workers
    wedged_pools: int = 0  # wedged pools the driver detected and ended (its run records)
    hung_ranges: int = 0
    hung_ranges_redone: int = 0  # hung ranges given up on (timed out, or lost with a killed pool)
    events_lost: int = 0
    events_duplicated: int = 0
    reruns_of_done_ranges: int = 0
    in_flight_at_driver_kills: int = 0
    lost_attempts: int = 0
    timeout_attempts: int = 0
    driver_runs: int = 0
    wall_seconds: float = 0.0
    complete: bool = False
    notes: list[str] = field(default_factory=list)


def campaign_file(plan: Plan, directory: Path) -> Path:
    rng = random.Random(plan.seed)
    hang = sorted(rng.sample(range(plan.ranges // 10, plan.ranges), plan.hung_ranges))
    data = {
        "name": "chaos",
        "events": plan.ranges,
        "events_per_range": 1,
        "events_per_merge": plan.events_per_merge,
        "seed": plan.seed,
        "attempts": 3,
        "range_timeout": {
            "factor": 5,
            "floor_seconds": plan.timeout_floor,
            "ceiling_seconds": plan.timeout_ceiling,
            "slack_seconds": plan.timeout_slack,
        },
        "payload": plan.payload
        or {
            "name": "emulate",
            "seconds_per_event": plan.seconds_per_event,
            "hang_events": hang,
        },
    }
    path = directory / "chaos.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- reading the campaign from outside ------------------------------------------------------


def query(out: Path, sql: str) -> list[tuple]:
    path = out / "ledger.sqlite"
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []


def done_count(out: Path) -> int:
    rows = query(out, "SELECT COUNT(*) FROM ranges WHERE state IN ('done','merged')")
    return rows[0][0] if rows else 0


def pools_of(out: Path) -> list[psutil.Process]:
    """The HTEX worker pools started for this campaign's driver runs."""
    marker = str(out / "logs" / "parsl")
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info.get("cmdline") or [])
        if "process_worker_pool" in cmd and marker in cmd:
            found.append(p)
    return found


def helper_and_workers(pool: psutil.Process) -> tuple[psutil.Process | None, list[psutil.Process]]:
    """A pool's multiprocessing helper (the first process it spawned) and its workers."""
    with contextlib.suppress(psutil.Error):
        kids = [
            c
            for c in pool.children()
            if "spawn_main" in " ".join(c.cmdline()) and "resource_tracker" not in c.name()
        ]
        kids.sort(key=lambda c: c.create_time())
        if kids:
            return kids[0], kids[1:]
    return None, []


# --- the damage ---------------------------------------------------------------------------------


def kill(procs: list[psutil.Process]) -> bool:
    hit = False
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
            hit = True
    return hit


def kill_transform(out: Path, rng: random.Random) -> bool:
    """SIGKILL one long-lived transform (service mode): a process a worker started."""
    transforms = []
    for pool in pools_of(out):
        for worker in helper_and_workers(pool)[1]:
            with contextlib.suppress(psutil.Error):
                transforms.extend(worker.children(recursive=True))
    return bool(transforms) and kill([rng.choice(transforms)])


def kill_worker(out: Path, rng: random.Random) -> bool:
    workers = [w for pool in pools_of(out) for w in helper_and_workers(pool)[1]]
    return bool(workers) and kill([rng.choice(workers)])


def kill_pool(out: Path, rng: random.Random) -> bool:
    pools = pools_of(out)
    if not pools:
        return False
    pool = rng.choice(pools)
    with contextlib.suppress(psutil.Error):
        return kill([pool, *pool.children(recursive=True)])
    return False


def wedge_pool(out: Path, rng: random.Random) -> bool:
    pools = pools_of(out)
    if not pools:
        return False
    helper, _ = helper_and_workers(rng.choice(pools))
    return helper is not None and kill([helper])


def start_driver(
    path: Path, out: Path, first: bool, log, overrides: tuple[str, ...] = ()
) -> subprocess.Popen:
    """The first driver submits (with the site overrides); later ones resume with the same."""
    sets = [a for o in overrides for a in ("--set", o)]
    args = ["submit", str(path), "-o", str(out), *sets] if first else ["resume", str(out)]
    return subprocess.Popen([ES_RUN, *args], stdout=log, stderr=log, start_new_session=True)


def triggers(n: int, total: int, lo: float, hi: float, rng: random.Random) -> list[int]:
    """``n`` progress marks (ranges done) spread between fractions lo and hi of ``total``."""
    if n <= 0:
        return []
    marks = np.linspace(lo * total, hi * total, n)
    jitter = (hi - lo) * total / max(n, 1) / 3
    return sorted(max(int(0.02 * total), int(m + rng.uniform(-jitter, jitter))) for m in marks)


def run_chaos(plan: Plan, workdir: Path, say=print) -> Figures:
    rng = random.Random(plan.seed)
    path = campaign_file(plan, workdir)
    out = workdir / "out"
    figures = Figures(ranges=plan.ranges, hung_ranges=plan.hung_ranges)
    todo = {
        "driver": triggers(plan.driver_kills, plan.ranges, 0.15, 0.75, rng),
        "worker": triggers(plan.worker_kills, plan.ranges, 0.05, 0.9, rng),
        # Pool kills come before the wedges: a pool killed soon after it was wedged
        # would end the wedge before the driver could find it (and the run would
        # report a detection that nothing needed).
        "pool": triggers(plan.pool_kills, plan.ranges, 0.1, 0.3, rng),
        "wedge": triggers(plan.wedges, plan.ranges, 0.45, 0.65, rng),
        "transform": triggers(plan.transform_kills, plan.ranges, 0.1, 0.8, rng),
    }
    done_at_kills: dict[int, int] = {}
    t0 = time.time()
    log = open(workdir / "drivers.log", "ab")  # noqa: SIM115 - lives as long as the run
    driver = start_driver(path, out, first=True, log=log, overrides=plan.site_overrides)
    figures.driver_runs = 1
    try:
        while True:
            code = driver.poll()
            if code is not None:
                if code == 0:
                    figures.complete = True
                    break
                figures.notes.append(f"driver run {figures.driver_runs} ended with {code}")
                if figures.driver_runs > plan.driver_kills + 5:
                    break
                driver = start_driver(path, out, first=False, log=log)
                figures.driver_runs += 1
                continue
            done = done_count(out)
            for kind, marks in todo.items():
                if not marks or done < marks[0]:
                    continue
                if kind == "driver":
                    driver.send_signal(signal.SIGKILL)  # the driver alone
                    driver.wait()
                    time.sleep(0.3)
                    running = query(out, "SELECT COUNT(*) FROM ranges WHERE state='running'")
                    figures.in_flight_at_driver_kills += running[0][0] if running else 0
                    # what the dead driver's ledger calls done must never run again
                    done_at_kills.update(
                        query(
                            out,
                            "SELECT idx, attempts FROM ranges WHERE state IN ('done','merged')",
                        )
                    )
                    figures.driver_kills += 1
                    say(f"[{time.time() - t0:6.1f}s] killed the driver at {done} ranges done")
                    marks.pop(0)
                    break  # the loop restarts the driver
                damage = {
                    "worker": kill_worker,
                    "pool": kill_pool,
                    "wedge": wedge_pool,
                    "transform": kill_transform,
                }
                hit = damage[kind](out, rng)
                if hit:
                    marks.pop(0)
                    key = INJECTED[kind]
                    setattr(figures, key, getattr(figures, key) + 1)
                    say(f"[{time.time() - t0:6.1f}s] {kind} kill at {done} ranges done")
            time.sleep(0.1)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGTERM)
            driver.wait(120)
        log.close()
    figures.wall_seconds = round(time.time() - t0, 1)
    _account(out, plan, figures, done_at_kills)
    return figures


def detected_wedged_pools(out: Path) -> int:
    """Wedged pools the driver found and ended, summed over its runs' records.

    A run killed by SIGKILL writes no record: what it detected is not counted.
    """
    return sum(
        int(json.loads(p.read_text()).get("wedged_pools") or 0)
        for p in sorted((out / "logs").glob("run-*.json"))
    )


def _account(out: Path, plan: Plan, figures: Figures, done_at_kills: dict[int, int]) -> None:
    """Independent check of the merged files, and the ledger's record of attempts."""
    numbers = []
    for f in sorted((out / "merged").glob("*.root")):
        with uproot.open(f) as root:
            numbers.append(root["events"]["event_number"].array(library="np"))
    found = np.concatenate(numbers) if numbers else np.array([], dtype=np.int64)
    unique = np.unique(found)
    expected = np.arange(0, plan.ranges)
    figures.events_lost = len(np.setdiff1d(expected, unique))
    figures.events_duplicated = int(len(found) - len(unique))
    # ranges the ledger called done at a driver kill that were started again afterwards
    final = dict(query(out, "SELECT idx, attempts FROM ranges"))
    damaged = {r[0] for r in query(out, "SELECT range_idx FROM attempts WHERE outcome='damaged'")}
    figures.reruns_of_done_ranges = sum(
        1 for idx, n in done_at_kills.items() if final.get(idx) != n and idx not in damaged
    )
    hung = yaml.safe_load((out.parent / "chaos.yaml").read_text())["payload"].get("hang_events", [])
    given_up = query(
        out,
        "SELECT DISTINCT range_idx FROM attempts WHERE outcome IN ('timeout','lost') "
        f"AND range_idx IN ({','.join(str(int(e)) for e in hung) or '-1'})",
    )
    figures.hung_ranges_redone = len(given_up)
    figures.wedged_pools = detected_wedged_pools(out)
    outcomes = dict(query(out, "SELECT outcome, COUNT(*) FROM attempts GROUP BY outcome"))
    figures.lost_attempts = outcomes.get("lost", 0)
    figures.timeout_attempts = outcomes.get("timeout", 0)
    starts = query(out, "SELECT COUNT(*), COUNT(DISTINCT worker) FROM transforms")
    if starts:
        figures.transform_starts, figures.transform_workers = starts[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 ranges, a few kills of each")
    parser.add_argument("--ranges", type=int)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    args = parser.parse_args()
    plan = Plan(seed=args.seed)
    if args.quick:
        plan = Plan(
            ranges=300,
            worker_kills=4,
            pool_kills=1,
            driver_kills=1,
            hung_ranges=1,
            events_per_merge=50,
            seed=args.seed,
        )
    if args.ranges:
        plan.ranges = args.ranges
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=False)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-")))
        figures = run_chaos(plan, workdir, say=lambda m: print(m, file=sys.stderr))
    f = figures
    print(
        f"chaos: {f.ranges} ranges, {f.worker_kills} worker kills, {f.pool_kills} pool kills, "
        f"{f.driver_kills} driver kills, {f.wedges_injected} pools wedged ("
        f"{f.wedged_pools} detected by the driver), {f.hung_ranges} hung "
        f"ranges -> events lost {f.events_lost}, duplicated {f.events_duplicated}, done ranges "
        f"re-run {f.reruns_of_done_ranges} (in flight at driver kills: "
        f"{f.in_flight_at_driver_kills}), wall {f.wall_seconds:.0f} s, "
        f"{'complete' if f.complete else 'INCOMPLETE'}"
    )
    print(json.dumps(asdict(f)))
    sys.exit(0 if f.complete and not f.events_lost and not f.events_duplicated else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
