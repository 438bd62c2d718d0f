"""Scale by simulation: the real engine and ledger against a whole machine in real time.

The dispatcher (``parsl_es/engine/dispatcher.py``) and a real ledger on disk drive
the simulated backend with ``clock="real"``: ``W`` virtual workers in pools of
128 (no thread or process per worker), ranges of ``T`` seconds (log-normal
spread), payload failures at ``--fault-rate``. The machine runs in a process
of its own (``--machine process``, the default: it takes no GIL from the driver)
or in a thread of the driver's (``--machine thread``); the driver thread's CPU is
measured alone (``time.thread_time()`` sampled in the driver thread), so what
the simulator costs is not counted.

After the warm-up (until every worker has run a task, then ``--warmup``
seconds, default ``max(2, 2 T)``; at the latest ``--latest-start`` seconds after
the start), ``--seconds`` are measured: utilisation of
the virtual workers (busy worker-seconds over ``W`` times the window), ranges
recorded per second, driver CPU per range. Queued bundles keep workers busy for
a while after a driver fell behind, so ``utilisation`` is the workers' busy share
only if the driver kept up: after the window it goes on as before, and it must
record every result the machine finished in the window within one bundle's
length (``catch_up_s``; ``Window._catch_up`` says why that is the test). If it
did not, the busy share is multiplied by the share of the window's results it
recorded in the window (``recorded_share``, at most 1; before 2026-12-01 that
product was the measure whatever the catch-up, and a window that ended in the
middle of a wave of results was charged for it). Also printed: the simulated
machine's own CPU (``machine_cpu_share``) and the driver process's time in
Python's garbage collector (``driver_gc_share``).
The last line printed is one JSON object.

    python -m benchmarks.scale --workers 100000 --range-seconds 1 --seconds 20
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import resource
import time
from pathlib import Path

from benchmarks.common import merges_in_turn, one_event_campaign, scratch
from benchmarks.pyspy import Sampler, summary
from benchmarks.scale_window import Window, timeline
from parsl_es.backends.sim_process import SimulatedMachineProcess
from parsl_es.backends.simulated import SimFaults, SimNodeType, SimulatedBackend
from parsl_es.engine.collector import DRIVER_THRESHOLDS
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement
from parsl_es.ledger import LEDGER_NAME, Ledger

WORKERS_PER_POOL = 128
#: py-spy samples a second (``--sample``): light enough not to slow the driver much.
SAMPLE_RATE = 50


def _rss_mb() -> tuple[float, float]:
    """(now, peak) resident memory of this process, MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    now = pages * resource.getpagesize() / 2**20
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(args: argparse.Namespace) -> dict:
    w, t = args.workers, args.range_seconds
    warmup = args.warmup if args.warmup is not None else max(2.0, 2 * t)
    # enough ranges for start-up, warm-up and the window at full speed, twice over
    ranges = args.ranges or int(2 * (w / t) * (args.seconds + warmup + 3 * t + 30)) + 4 * w
    node = SimNodeType(
        workers=w,
        pools=max(1, -(-w // WORKERS_PER_POOL)),
        range_seconds=t,
        spread=args.spread,
        step_seconds=0.05,
    )
    faults = SimFaults(range_failure_rate=args.fault_rate)
    if args.machine == "process":  # the machine's work off the driver's GIL
        sim = SimulatedMachineProcess({"cpu": node}, faults, seed=args.seed)
    else:
        sim = SimulatedBackend({"cpu": node}, faults, seed=args.seed, clock="real")
    with scratch("es-scale-") as tmp:
        out = tmp / "out"
        one_event_campaign(out, "scale", ranges, args.events_per_merge)
        counters: list = []
        sampler = (
            Sampler(os.getpid(), args.seconds, Path(args.sample), SAMPLE_RATE)
            if args.sample
            else None
        )
        mean_range = t * math.exp(args.spread**2 / 2)  # (log-normal: T exp(sigma^2 / 2))
        window = Window(
            sim,
            warmup,
            args.seconds,
            args.latest_start,
            counters,
            sampler,
            mean_range_seconds=mean_range,
        )
        submitted_at = sim.now()
        cpu0 = time.thread_time()
        try:
            with Ledger.open(out / LEDGER_NAME) as ledger:
                spec = ledger.campaign_json()["payload"]
                dispatcher = Dispatcher(
                    ledger=ledger,
                    backend=sim,
                    output_dir=out,
                    payload=(spec.pop("name"), spec),
                    placement=Placement(simulate=["cpu"], merge="cpu", validate="cpu"),
                    settings=Settings(
                        attempts=3,
                        stop_grace_seconds=0.0,
                        bundle_size=args.bundle_size,
                        collector=None if args.python_gc else DRIVER_THRESHOLDS,
                    ),
                    stop=window.stop,
                    steps=merges_in_turn() if args.merges_in_turn else SIMULATION_CAMPAIGN,
                )
                counters.extend(c.counters for c in dispatcher.contexts)
                # the profile covers the driver thread's whole run (start-up included):
                # at a large W one loop iteration can outlast the measured window
                profiler = cProfile.Profile(time.thread_time) if args.profile else None
                if profiler:
                    profiler.enable()
                dispatcher.run()
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
        finally:
            sim.close()
        total_cpu = time.thread_time() - cpu0
    start, end = window.start, window.end
    if start is None or end is None:
        raise SystemExit("the run ended before the measured window did (campaign too small?)")
    span = end["t"] - start["t"]
    done = end["ranges"] - start["ranges"]
    rss, peak = _rss_mb()
    busy_share = (end["busy"] - start["busy"]) / (w * span)
    finished = end["finished"] - start["finished"]
    unrecorded = end["finished"] - end["results"]  # finished, not yet recorded, at the end
    # no bundle came back in the window (bundles longer than it): nothing to keep up
    # with, unless results from before it are still waiting
    recorded = end["results"] - start["results"]
    recorded_share = recorded / finished if finished else float(unrecorded <= 0)
    # Workers busy with tasks queued long ago look busy while the driver falls behind.
    # A driver that caught up within a bundle's length keeps up (``Window._catch_up``);
    # one that did not is charged the share of the window's results it left unrecorded.
    kept_up = window.catch_up is not None
    utilisation = busy_share * (1.0 if kept_up else min(1.0, recorded_share))
    recorded_of_ideal = (done / span) * mean_range / w  # (the measure before 2026-12-01)
    figures = {
        "benchmark": "scale",
        "workers": w,
        "range_seconds": t,
        "spread": args.spread,
        "fault_rate": args.fault_rate,
        "window_s": round(span, 2),
        "utilisation": round(utilisation, 4),
        "busy_share": round(busy_share, 4),
        "kept_up": kept_up,
        "catch_up_s": None if window.catch_up is None else round(window.catch_up, 2),
        "catch_up_limit_s": round(window.catch_up_limit, 2),  # one bundle's length
        "recorded_share": round(recorded_share, 4),
        "ranges_finished_in_window": finished,
        "unrecorded_at_start": start["finished"] - start["results"],
        "unrecorded_at_end": unrecorded,
        "recorded_of_ideal": round(recorded_of_ideal, 4),
        "ranges_per_second": round(done / span, 1),
        "ideal_ranges_per_second": round(w / t, 1),
        "driver_us_per_range": round(1e6 * (end["cpu"] - start["cpu"]) / max(1, done), 2),
        "driver_cpu_share": round((end["cpu"] - start["cpu"]) / span, 3),
        # with its sending and receiving threads (the simulated machine's pipe)
        "driver_process_cpu_share": round((end["process_cpu"] - start["process_cpu"]) / span, 3),
        # the driver process's time in Python's cyclic garbage collector, any thread
        "driver_gc_share": round((end["gc"] - start["gc"]) / span, 3),
        "driver_full_collections": end["gc_full"] - start["gc_full"],
        # the simulated machine's own process (None: it runs in the driver's)
        "machine_cpu_share": None
        if start["machine_cpu"] is None or end["machine_cpu"] is None
        else round((end["machine_cpu"] - start["machine_cpu"]) / span, 3),
        "seconds_to_all_busy": None
        if sim.all_busy_at is None
        else round(sim.all_busy_at - submitted_at, 2),
        "driver_cpu_s_total": round(total_cpu, 2),
        "sim_max_late_s": round(sim.late_seconds, 3),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "tasks_submitted": sum(sim.submitted.values()),
        "bundle_size": args.bundle_size or "adaptive",
        "collector": "python" if args.python_gc else "engine",
        "merges": "in turn" if args.merges_in_turn else "first",
        "profiled": bool(args.profile),  # (cProfile slows the driver: CPU figures grow)
        "ranges_per_task": round(sim.ranges_run / max(1, sim.submitted["simulate_ranges"]), 1),
        "timeline": timeline(window.samples, w),
    }
    if args.profile:
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    if sampler is not None and sampler.wait():
        # the driver's thread alone: the stacks that run the dispatcher
        where = summary(Path(args.sample), args.seconds, SAMPLE_RATE, 20, "Dispatcher.run")
        print(json.dumps({"driver_thread_samples": where}, indent=1), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--range-seconds", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, help="after all workers are busy (2 T)")
    parser.add_argument(
        "--latest-start",
        type=float,
        default=120.0,
        help="start the window by then (s after submit) even if some worker never got work",
    )
    parser.add_argument("--spread", type=float, default=0.1, help="log-normal sigma")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="payload failures")
    parser.add_argument("--events-per-merge", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--ranges", type=int, help="campaign size (default: the run at full speed, twice over)"
    )
    parser.add_argument("--bundle-size", type=int, help="ranges per task (default: adaptive)")
    parser.add_argument(
        "--machine",
        choices=("thread", "process"),
        default="process",
        help="where the simulated machine runs: a thread of the driver's process, or its own",
    )
    parser.add_argument(
        "--python-gc",
        action="store_true",
        help="the driver with CPython's collector thresholds, not the engine's (a baseline)",
    )
    parser.add_argument(
        "--merges-in-turn", action="store_true", help="merges queued behind ranges (a baseline)"
    )
    parser.add_argument("--profile", help="cProfile of the driver thread (whole run) to FILE")
    parser.add_argument(
        "--sample", help="py-spy of the driver process over the window to FILE (raw), summarised"
    )
    args = parser.parse_args()
    figures = run(args)
    print(
        f"scale: {figures['workers']:,} workers x {figures['range_seconds']} s: "
        f"utilisation {100 * figures['utilisation']:.2f} %, "
        f"{figures['ranges_per_second']:,.0f} ranges/s, "
        f"{figures['driver_us_per_range']} us driver CPU per range"
        + (
            ""
            if figures["ranges_finished_in_window"]
            else " (no bundle came back in the window: too short to see the driver keep up)"
        ),
        flush=True,
    )
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
