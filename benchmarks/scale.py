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
recorded per second, driver CPU per range. ``utilisation`` is the workers' busy
share times the share of the ranges they finished in the window that the driver
recorded as done in it (``recorded_share``, at most 1): queued bundles keep workers
busy for a while after a driver fell behind, and only the second shows it.
(Until 2026-12-01 the second share was the ranges recorded over ``W / T``; bundles
that all started together finish together, so a window shorter than a few
bundles saw too few or too many of them: ``recorded_of_ideal``, still printed.)
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
import threading
import time
from pathlib import Path

from benchmarks.common import scratch
from benchmarks.pyspy import Sampler, summary
from parsl_es.backends.sim_process import SimulatedMachineProcess
from parsl_es.backends.simulated import SimFaults, SimNodeType, SimulatedBackend
from parsl_es.campaign import campaign_from_dict
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.steps import Placement
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


def new_campaign(out: Path, ranges: int, events_per_merge: int) -> None:
    spec = campaign_from_dict(
        {
            "name": "scale",
            "events": ranges,
            "events_per_range": 1,
            "events_per_merge": events_per_merge,
            "seed": 1,
            "payload": {"name": "emulate", "output_format": "npy"},
        }
    )
    for sub in ("ranges", "merged", "validation", "logs"):
        (out / sub).mkdir(parents=True)
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan).close()


class Window:
    """The measured window, sampled by a thread of its own at the right moments.

    The driver thread's CPU is read through its CPU clock
    (``pthread_getcpuclockid``), so a long loop iteration of the driver (a huge
    batch at a large ``W``) cannot move the window's edges.
    """

    def __init__(
        self,
        sim: SimulatedBackend | SimulatedMachineProcess,
        warmup: float,
        seconds: float,
        latest: float,
        counters: list,
        sampler: Sampler | None = None,
    ):
        self.sim = sim
        self.latest = latest  # the window starts by then even if not every worker is busy
        self.warmup = warmup
        self.seconds = seconds
        self.counters = counters  # the engine's (filled once the dispatcher exists)
        self.sampler = sampler  # py-spy of this process over the window
        self.stop = threading.Event()
        self.start: dict | None = None
        self.end: dict | None = None
        self.t0 = sim.now()
        self._clock = time.pthread_getcpuclockid(threading.get_ident())  # the driver's
        self._thread = threading.Thread(target=self._watch, name="scale-window", daemon=True)
        self._thread.start()

    def sample(self) -> dict:
        t, busy, _ = self.sim.busy_seconds()
        return {
            "t": t,
            "cpu": time.clock_gettime(self._clock),
            "process_cpu": time.process_time(),  # all the driver process's threads
            "busy": busy,
            "finished": self.sim.ranges_finished,  # by the machine (a moment later)
            "ranges": sum(c.ranges for c in self.counters),
        }

    def _watch(self) -> None:
        while True:
            ready = self.sim.all_busy_at
            now = self.sim.now()
            if ready is None and now - self.t0 >= self.latest:
                ready = now - self.warmup
            if ready is not None and now >= ready + self.warmup:
                break
            time.sleep(0.05)
        self.start = self.sample()
        if self.sampler is not None:
            self.sampler.start()
        time.sleep(self.seconds)
        self.end = self.sample()
        self.stop.set()


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
        new_campaign(out, ranges, args.events_per_merge)
        counters: list = []
        sampler = (
            Sampler(os.getpid(), args.seconds, Path(args.sample), SAMPLE_RATE)
            if args.sample
            else None
        )
        window = Window(sim, warmup, args.seconds, args.latest_start, counters, sampler)
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
                        attempts=3, stop_grace_seconds=0.0, bundle_size=args.bundle_size
                    ),
                    stop=window.stop,
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
    # Workers busy with tasks queued long ago look busy while the driver falls behind:
    # the share of what they finished that the driver recorded says whether it keeps up.
    busy_share = (end["busy"] - start["busy"]) / (w * span)
    finished = end["finished"] - start["finished"]
    unrecorded = end["finished"] - end["ranges"]  # finished, not yet recorded, at the end
    # no bundle came back in the window (bundles longer than it): nothing to keep up
    # with, unless results from before it are still waiting
    recorded_share = done / finished if finished else float(unrecorded <= 0)
    # (the old measure: a range lasts T exp(sigma^2/2) on average, log-normal spread)
    recorded_of_ideal = (done / span) * t * math.exp(args.spread**2 / 2) / w
    figures = {
        "benchmark": "scale",
        "workers": w,
        "range_seconds": t,
        "spread": args.spread,
        "fault_rate": args.fault_rate,
        "window_s": round(span, 2),
        "utilisation": round(busy_share * min(1.0, recorded_share), 4),
        "busy_share": round(busy_share, 4),
        "recorded_share": round(recorded_share, 4),
        "ranges_finished_in_window": finished,
        "unrecorded_at_start": start["finished"] - start["ranges"],
        "unrecorded_at_end": unrecorded,
        "recorded_of_ideal": round(recorded_of_ideal, 4),
        "ranges_per_second": round(done / span, 1),
        "ideal_ranges_per_second": round(w / t, 1),
        "driver_us_per_range": round(1e6 * (end["cpu"] - start["cpu"]) / max(1, done), 2),
        "driver_cpu_share": round((end["cpu"] - start["cpu"]) / span, 3),
        # with its sending and receiving threads (the simulated machine's pipe)
        "driver_process_cpu_share": round((end["process_cpu"] - start["process_cpu"]) / span, 3),
        "seconds_to_all_busy": None
        if sim.all_busy_at is None
        else round(sim.all_busy_at - submitted_at, 2),
        "driver_cpu_s_total": round(total_cpu, 2),
        "sim_max_late_s": round(sim.late_seconds, 3),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "tasks_submitted": sum(sim.submitted.values()),
        "bundle_size": args.bundle_size or "adaptive",
        "profiled": bool(args.profile),  # (cProfile slows the driver: CPU figures grow)
        "ranges_per_task": round(sim.ranges_run / max(1, sim.submitted["simulate_ranges"]), 1),
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
