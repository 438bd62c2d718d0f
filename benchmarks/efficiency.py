"""Worker utilisation: how much of the workers' time goes into the payload.

For 8, 32 and 128 workers and range durations of 1 s, 0.1 s and 0.02 s, a
campaign of one-event ranges whose payload sleeps for the range duration
(``emulate``, npy output; sleeping lets many workers share 2 cores: HTEX caps
workers at cores / ``cores_per_worker``, so ``cores_per_worker`` is set to
cores / workers). Next to it, on the same executor, plain Parsl running one app
per range that sleeps as long.

Utilisation = time spent in the campaign's work / (workers x time), two ways:
steady state (from the moment every worker has started its first range to the
end of the last) and end to end (from submit to the end of the last range).
For parsl-es, the work is each range's recorded duration (the sleep plus writing
its file) and each merge and validation the ledger records on a worker (they run
on the same workers during the campaign: a worker merging the third of four
groups in the last seconds is busy, not a tail); ``steady_ranges_only`` leaves
them out. For plain Parsl, each app's own start to end.

    python -m benchmarks.efficiency [--quick] [--seconds 20] [--plot docs/images/efficiency.png]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import quantiles_ms, report, scratch
from benchmarks.handover import handovers
from benchmarks.pyspy import Sampler, summary
from parsl_es import api
from parsl_es.apps import probe
from parsl_es.backends.parsl import ParslBackend
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.sites import load_site

WORKERS = (8, 32, 128)
DURATIONS = (1.0, 0.1, 0.02)


class CpuMeter:
    """Share of the whole machine's CPU time that was busy since creation.

    On 2 cores shared by 128 workers, the driver and the worker pool, a busy
    machine delays every hand-over between ranges: this says whether the gap to
    full utilisation is the software's or the machine's.
    """

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self._start = psutil.cpu_times()

    def busy(self) -> float:
        now = self._psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (
            self._start.idle + getattr(self._start, "iowait", 0.0)
        )
        total = sum(now) - sum(self._start)
        return round(1.0 - idle / total, 4) if total > 0 else 0.0


Span = tuple[float, float, object]  # (start, end, worker)


def steady_window(
    spans: Sequence[Span], workers: int, steps: Sequence[Span] = ()
) -> tuple[float, float, float]:
    """``(t_steady, t_tail, t_end)`` of ranges ``spans``.

    Steady state begins once every worker has started a range; the tail once the
    first worker has run out of work (its ranges, or ``steps``: merges and
    validations on the same workers, cut at the ranges' end), the rest is imbalance.
    """
    first, last = {}, {}
    for start, end, who in spans:
        first[who] = min(first.get(who, start), start)
        last[who] = max(last.get(who, end), end)
    t_end = max(end for _, end, _ in spans)
    for start, end, who in steps:  # a worker merging until the end has no tail
        if who in last and start < t_end:
            last[who] = max(last[who], min(end, t_end))
    t_steady = max(first.values()) if len(first) >= workers else t_end
    t_tail = min(last.values()) if len(last) >= workers else t_end
    return t_steady, t_tail, t_end


def utilisation(
    spans: Sequence[Span], workers: int, t_submit: float, steps: Sequence[Span] = ()
) -> dict:
    """Steady-state and end-to-end utilisation of ranges ``spans``.

    ``steps``: other work of the campaign on the same workers (merges,
    validations), busy time like the ranges; the window is still the ranges'.
    """
    t_steady, t_tail, t_end = steady_window(spans, workers, steps)
    work = [*spans, *steps]

    def busy_share(t0: float, t1: float) -> float:
        busy = sum(max(0.0, min(e, t1) - max(s, t0)) for s, e, _ in work)
        return busy / (workers * (t1 - t0)) if t1 > t0 else 0.0

    busy_total = sum(e - s for s, e, _ in work)
    return {
        "steady": round(busy_share(t_steady, t_end), 4),
        "before_tail": round(busy_share(t_steady, t_tail), 4),
        "tail_s": round(t_end - t_tail, 2),
        "end_to_end": round(busy_total / (workers * (t_end - t_submit)), 4),
        "workers_seen": len({who for _, _, who in spans}),
        "ranges_per_s": round(len(spans) / (t_end - t_submit), 1),
    }


def parsl_es_run(
    session: ParslBackend, workers: int, seconds: float, n: int, tmp: Path, profile: float = 0.0
) -> dict:
    spec = {
        "name": f"eff-{workers}-{seconds:g}",
        "events": n,
        "events_per_range": 1,
        "events_per_merge": max(1, n // 4),
        "seed": 1,
        "payload": {"name": "emulate", "seconds_per_event": seconds, "output_format": "npy"},
    }
    out = tmp / spec["name"]
    samplers = _pool_samplers(profile, tmp) if profile else {}
    for sampler in samplers.values():
        sampler.start()
    cpu = CpuMeter()
    t_submit = time.time()
    result = api.run_campaign(spec, out, session=session)
    busy = cpu.busy()
    assert result.status == "complete", result.message
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        rows = [(r.started, r.finished, r.worker, r.task) for r in ledger.ranges()]
        seen = ledger.report_rows()
    spans = [(s, e, w) for s, e, w, _ in rows]
    steps = [
        (run.started, run.finished, run.worker)
        for run in (*seen.merge_runs, *seen.validation_runs)
        if run.worker and run.started is not None and run.finished is not None
    ]
    ranges_only = utilisation(spans, workers, t_submit)
    figures = utilisation(spans, workers, t_submit, steps)
    # Parsl's own worker path between two tasks, before the tail (its worker logs)
    t_steady, t_tail, _ = steady_window(spans, workers, steps)
    path = handovers(session.run_dir / "workers", t_steady, t_tail)
    figures = {
        **figures,
        "steady_ranges_only": ranges_only["steady"],
        "tail_ranges_only_s": ranges_only["tail_s"],
        "merge_and_validation_s": round(sum(e - s for s, e, _ in steps), 2),
        **waits(rows),
        "parsl_worker_path": path,
        "parsl_worker_path_share": round(
            path["worker_seconds"] / (workers * (t_tail - t_steady)), 4
        )
        if t_tail > t_steady
        else 0.0,
        "machine_cpu_busy": busy,
    }
    for who, sampler in samplers.items():
        if sampler.wait():
            figures[f"profile_{who}"] = summary(sampler.out, sampler.seconds, sampler.rate)
    return figures


def _pool_samplers(seconds: float, tmp: Path) -> dict[str, Sampler]:
    """py-spy on the worker pool's manager (the process that hands tasks to its
    workers) and on the interchange, for the first ``seconds`` of the campaign.

    The pool is not this process's child (the local provider detaches it): it is
    found by its log directory, under this run's scratch directory.
    """
    import psutil

    found: dict[str, int] = {}
    scratch_dir = str(tmp.parent)
    procs = list(psutil.process_iter(["pid", "ppid", "cmdline"]))
    pool = {
        p.info["pid"]
        for p in procs
        if "process_worker_pool.py" in " ".join(p.info["cmdline"] or ())
        and scratch_dir in " ".join(p.info["cmdline"] or ())
    }
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    for p in procs:
        line = " ".join(p.info["cmdline"] or ())
        if p.info["pid"] in pool and p.info["ppid"] not in pool and "python" in line:
            found["manager"] = p.info["pid"]  # (its workers are its children)
        elif "HTEX interchange" in line and p.info["pid"] in ours:
            found["interchange"] = p.info["pid"]
    return {who: Sampler(pid, seconds, tmp / f"{who}.raw") for who, pid in found.items()}


def waits(rows: list[tuple[float, float, str, int]]) -> dict:
    """Where a worker's time between ranges goes, from the ledger.

    Between two ranges of one bundle the wait is parsl-es's own loop; between the
    last range of one bundle and the first of the next it is the way back through
    Parsl's worker pool (result out, next task in). ``wait_share`` is all of it
    over the workers' time from their first to their last range.
    """
    by_worker: dict[str, list[tuple[float, float, int]]] = {}
    for started, finished, worker, task in rows:
        by_worker.setdefault(worker, []).append((started, finished, task))
    within, between, span = [], [], 0.0
    for ranges in by_worker.values():
        ranges.sort()
        span += ranges[-1][1] - ranges[0][0]
        for (_, end, task), (start, _, next_task) in itertools.pairwise(ranges):
            (within if task == next_task else between).append(max(0.0, start - end))

    return {
        "wait_in_bundle_ms_median": quantiles_ms(within)["median"],
        "wait_between_bundles_ms": quantiles_ms(between),
        "wait_share": round((sum(within) + sum(between)) / span, 4) if span else 0.0,
    }


def plain_run(session: ParslBackend, workers: int, seconds: float, n: int) -> dict:
    from parsl.app.app import python_app

    app = python_app(probe, executors=["local"], data_flow_kernel=session.dfk)
    cpu = CpuMeter()
    t_submit = time.time()
    futures = [app(seconds) for _ in range(n)]
    spans = [f.result() for f in futures]
    return {**utilisation(spans, workers, t_submit), "machine_cpu_busy": cpu.busy()}


def wait_for_workers(session: ParslBackend, workers: int, timeout: float = 900.0) -> float:
    """Seconds until every worker process has run a task (importing parsl_es).

    A worker pool reports all its workers when it connects, while their processes
    are still starting; a round of short tasks on every worker waits for them, so
    that neither parsl-es nor plain Parsl is measured on cold workers.
    """
    from parsl.app.app import python_app

    t0 = time.time()
    while (session.connected_workers("local") or 0) < workers:
        if time.time() - t0 > timeout:
            raise RuntimeError(f"only {session.connected_workers('local')} of {workers} workers")
        time.sleep(0.2)
    warm = python_app(probe, executors=["local"], data_flow_kernel=session.dfk)
    pids = {f.result()[2] for f in [warm(0.5) for _ in range(2 * workers)]}
    while len(pids) < workers and time.time() - t0 < timeout:
        pids |= {f.result()[2] for f in [warm(0.5) for _ in range(workers)]}
    return time.time() - t0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for seconds in sorted({r["range_seconds"] for r in results}, reverse=True):
        rows = sorted(
            (r for r in results if r["range_seconds"] == seconds), key=lambda r: r["workers"]
        )
        w = [r["workers"] for r in rows]
        for key, style, label in (("parsl_es", "-o", "parsl-es"), ("plain", "--x", "plain Parsl")):
            line = ax1.plot(
                w, [r[key]["steady"] * 100 for r in rows], style, label=f"{label}, {seconds:g} s"
            )
            ax2.plot(w, [r[key]["ranges_per_s"] for r in rows], style, color=line[0].get_color())
    ax1.set(xscale="log", xlabel="workers", ylabel="steady-state utilisation [%]", ylim=(0, 105))
    ax2.set(xscale="log", yscale="log", xlabel="workers", ylabel="ranges per second (end to end)")
    for ax in (ax1, ax2):
        ax.set_xticks([r["workers"] for r in results], [str(r["workers"]) for r in results])
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    fig.suptitle("Weak scaling on 2 cores: workers sleeping for the range duration")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 and 32 workers, 0.1 and 0.02 s")
    parser.add_argument("--seconds", type=float, help="ideal campaign length (default 20, quick 5)")
    parser.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    parser.add_argument("--workers", type=int, nargs="+", help="worker counts (default 8 32 128)")
    parser.add_argument("--durations", type=float, nargs="+", help="range seconds (1 0.1 0.02)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="parsl-es runs per case, on the same workers"
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain Parsl runs")
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="py-spy the worker pool's manager and the interchange for this many seconds "
        "of the first parsl-es run of each case (pip install -e '.[bench]')",
    )
    args = parser.parse_args()
    workers_list = args.workers or ((8, 32) if args.quick else WORKERS)
    durations = args.durations or ((0.1, 0.02) if args.quick else DURATIONS)
    length = args.seconds or (5.0 if args.quick else 20.0)
    cores = len(os.sched_getaffinity(0))
    results = []
    with scratch("es-efficiency-") as tmp:
        for workers in workers_list:
            site = load_site(
                "local", [f"workers_per_node={workers}", f"cores_per_worker={cores / workers}"]
            )
            t0 = time.time()
            with ParslBackend(site, tmp / f"parsl-{workers}") as session:
                startup = wait_for_workers(session, workers)
                for seconds in durations:
                    n = max(4 * workers, int(workers * length / seconds))
                    runs = [
                        parsl_es_run(
                            session, workers, seconds, n, tmp / f"run{i}", args.profile * (i == 0)
                        )
                        for i in range(args.repeat)
                    ]
                    es = runs[0]
                    if args.repeat > 1:
                        steady = ", ".join(f"{r['steady']:.1%}" for r in runs)
                        alone = ", ".join(f"{r['steady_ranges_only']:.1%}" for r in runs)
                        print(
                            f"  {workers} x {seconds:g} s, {args.repeat} runs: {steady} "
                            f"(ranges only: {alone})"
                        )
                    empty = {"steady": 0.0, "end_to_end": 0.0, "ranges_per_s": 0.0}
                    plain = empty if args.no_plain else plain_run(session, workers, seconds, n)
                    results.append(
                        {
                            "workers": workers,
                            "range_seconds": seconds,
                            "ranges": n,
                            "workers_started_s": round(startup, 1),
                            "parsl_es": es,
                            "parsl_es_runs": [r["steady"] for r in runs],
                            "parsl_es_runs_ranges_only": [r["steady_ranges_only"] for r in runs],
                            "plain": plain,
                        }
                    )
                    print(
                        f"  {workers:4d} workers x {seconds:5.2f} s, {n} ranges: parsl-es "
                        f"{es['steady']:.1%} steady ({es['steady_ranges_only']:.1%} ranges only, "
                        f"{es['merge_and_validation_s']:.1f} s merging and validating) / "
                        f"{es['end_to_end']:.1%} end to end "
                        f"({es['ranges_per_s']:.0f}/s); plain Parsl {plain['steady']:.1%} / "
                        f"{plain['end_to_end']:.1%} ({plain['ranges_per_s']:.0f}/s); parsl-es "
                        f"{es['before_tail']:.1%} before its {es['tail_s']:.1f} s tail, machine "
                        f"CPU {es['machine_cpu_busy']:.0%} busy; waits between bundles "
                        f"{es['wait_between_bundles_ms']['median']} ms median, "
                        f"{es['wait_between_bundles_ms']['mean']} ms mean "
                        f"({es['wait_share']:.1%} of worker time)",
                        flush=True,
                    )
                    path = es["parsl_worker_path"]
                    if path["returning_ms"]["count"]:
                        print(
                            "    Parsl's worker path per hand-over (its worker logs): returning a "
                            f"result {path['returning_ms']['median']} ms median, "
                            f"{path['returning_ms']['mean']} ms mean; taking the next task "
                            f"{path['taking_ms']['median']} ms median, {path['taking_ms']['mean']} "
                            f"ms mean ({es['parsl_worker_path_share']:.1%} of worker time)",
                            flush=True,
                        )
                    for who in ("manager", "interchange"):
                        prof = es.get(f"profile_{who}")
                        if prof:
                            top = "; ".join(f"{f} {x:.1%}" for f, x in prof["own"][:8])
                            print(f"    {who}: {prof['busy']:.0%} of a core; own: {top}")
            print(f"  {workers} workers: {startup:.1f} s to start ({time.time() - t0:.0f} s)")
    if args.plot:
        plot(results, args.plot)
    lines = [
        f"{r['workers']}x{r['range_seconds']:g}s: {r['parsl_es']['steady']:.1%} "
        f"(plain {r['plain']['steady']:.1%})"
        for r in results
    ]
    report(
        {"benchmark": "efficiency", "results": results}, "efficiency, steady: " + "; ".join(lines)
    )


if __name__ == "__main__":
    main()
