"""A waiting driver: its CPU per wall second while long ranges run.

On the real local site (``site_configs/local.yaml``, Parsl's HighThroughputExecutor),
a campaign of one-event ranges whose payload sleeps ``seconds_per_event``
(``emulate``) keeps every worker busy; the driver has nothing to do but wait.
Measured: the driver process's CPU time (all its threads, Parsl's included) per
wall second, from 0.5 s after submission to the campaign's end. Next to it, in
the same run and the same process on the same executor, plain Parsl waiting on
as many sleep tasks of the same length, and a bare Python process sleeping.
Each thread's share is printed (by thread name) to find what still wakes up.

    python -m benchmarks.idle [--workers 2] [--seconds 1 5 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import psutil

from benchmarks.common import scratch
from benchmarks.efficiency import wait_for_workers
from parsl_es import api
from parsl_es.apps import probe
from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site

SETTLE_SECONDS = 0.5


class ThreadCpu:
    """This process's CPU time, in all and per thread (by name), since creation."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, dict[str, float]]:
        names = {t.native_id: t.name for t in threading.enumerate()}
        per: dict[str, float] = {}
        for t in self.proc.threads():
            name = names.get(t.id, "other")
            per[f"{name}:{t.id}"] = t.user_time + t.system_time
        c = self.proc.cpu_times()
        return time.monotonic(), c.user + c.system, per

    def since(self) -> dict:
        w1, c1, p1 = self._sample()
        w0, c0, p0 = self._start
        wall = w1 - w0
        threads: dict[str, float] = {}
        for key, cpu in p1.items():
            name = key.split(":", 1)[0]
            name = name.rstrip("0123456789-_") or name
            threads[name] = threads.get(name, 0.0) + cpu - p0.get(key, 0.0)
        return {
            "wall_s": round(wall, 2),
            "cpu_s": round(c1 - c0, 4),
            "core_percent": round(100 * (c1 - c0) / wall, 3) if wall > 0 else 0.0,
            "threads_percent": {
                k: round(100 * v / wall, 3)
                for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                if v > 0
            },
        }


def interchange_cpu() -> float:
    """CPU seconds of this process's children (the interchange and its guard)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "interchange" in " ".join(child.cmdline()):
                c = child.cpu_times()
                total += c.user + c.system
        except psutil.Error:
            pass
    return total


def measured(run: callable) -> dict:
    """CPU per wall second of ``run`` (in a thread), after its first ``SETTLE_SECONDS``."""
    done = threading.Event()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = run()
        finally:
            done.set()

    thread = threading.Thread(target=target, name="campaign")
    thread.start()
    done.wait(SETTLE_SECONDS)
    meter = ThreadCpu()
    ix0 = interchange_cpu()
    done.wait()
    figures = meter.since()
    thread.join()
    figures["interchange_core_percent"] = round(
        100 * (interchange_cpu() - ix0) / figures["wall_s"], 3
    )
    figures["result"] = box.get("result")
    return figures


def parsl_es_case(session: ParslBackend, workers: int, seconds: float, rounds: int, tmp) -> dict:
    n = workers * rounds
    spec = {
        "name": f"idle-{seconds:g}",
        "events": n,
        "events_per_range": 1,
        "events_per_merge": n,
        "seed": 1,
        "payload": {"name": "emulate", "seconds_per_event": seconds, "output_format": "npy"},
    }

    def run() -> str:
        result = api.run_campaign(spec, tmp / spec["name"], session=session)
        assert result.status == "complete", result.message
        return str(result.status)

    return measured(run)


def plain_case(session: ParslBackend, workers: int, seconds: float, rounds: int) -> dict:
    from parsl.app.app import python_app

    app = python_app(probe, executors=["local"], data_flow_kernel=session.dfk)

    def run() -> int:
        futures = [app(seconds) for _ in range(workers * rounds)]
        return len([f.result() for f in futures])

    return measured(run)


def bare_python_cpu(seconds: float) -> dict:
    """CPU per wall second of a bare Python process sleeping (its own measure, in-process)."""
    code = (
        f"import time;t=time.monotonic();c=time.process_time();time.sleep({seconds!r});"
        "print((time.process_time()-c)/(time.monotonic()-t))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {"core_percent": round(100 * float(out.stdout), 4), "wall_s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 5.0, 30.0])
    parser.add_argument("--rounds", type=int, help="ranges per worker (default: ~30 s each)")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain Parsl baseline")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    site = load_site(
        "local",
        [f"workers_per_node={args.workers}", f"cores_per_worker={cores / args.workers}"],
    )
    cases = []
    with scratch("es-idle-") as tmp, ParslBackend(site, tmp / "parsl") as session:
        wait_for_workers(session, args.workers)
        for seconds in args.seconds:
            rounds = args.rounds or max(1, round(30 / seconds))
            es = parsl_es_case(session, args.workers, seconds, rounds, tmp)
            plain = None if args.no_plain else plain_case(session, args.workers, seconds, rounds)
            bare = bare_python_cpu(min(seconds * rounds, 5.0))
            cases.append(
                {
                    "seconds_per_range": seconds,
                    "ranges": args.workers * rounds,
                    "parsl_es": es,
                    "plain_parsl": plain,
                    "bare_python": bare,
                }
            )
            print(
                f"  {args.workers} workers x {seconds:g} s ranges x {rounds}: driver "
                f"{es['core_percent']:.2f} % of a core over {es['wall_s']:.1f} s "
                f"(interchange {es['interchange_core_percent']:.2f} %); plain Parsl "
                + (f"{plain['core_percent']:.2f} %" if plain else "-")
                + f"; bare Python {bare['core_percent']:.3f} %; threads {es['threads_percent']}",
                flush=True,
            )
    worst = max(c["parsl_es"]["core_percent"] for c in cases)
    print(f"idle: worst {worst:.2f} % of a core (target <= 1 %)", flush=True)
    figures = {"benchmark": "idle", "workers": args.workers, "worst_core_percent": worst}
    print(json.dumps(figures | {"cases": cases}), flush=True)  # last line: JSON


if __name__ == "__main__":
    main()
