"""Driver CPU per event range: parsl-es against plain Parsl on the same executor.

A campaign of one-event ranges whose payload does no work (``emulate`` with
npy output), and plain Parsl running as many no-op apps on the same loaded
executor. Both are measured by the driver process's CPU time (all its threads,
Parsl's included; the interchange and the workers are other processes) and by
wall time. Outputs go to tmpfs, so the figure is the engine's, not the disk's.

    python -m benchmarks.dispatch [--ranges 100000] [--quick]

``--marginal SMALL,LARGE`` measures instead the marginal driver CPU per range:
each side runs in a process of its own at both sizes (parsl-es: a whole
campaign through ``api.run_campaign`` on the local site; plain Parsl: as many
no-op apps on the same site), and the process's own CPU (its threads; the
interchange and workers are other processes) at the larger size less that at
the smaller, over the difference in ranges, is what one more range costs:
start-up, imports and the site's launch cancel out.

    python -m benchmarks.dispatch --marginal 4000,20000 [--bundle-size B]

With ``--bundle-size`` every task of parsl-es carries ``B`` ranges (default:
the engine's own sizes), so runs at two sizes of bundle tell what a range costs
on its own from what its share of a task costs. The ledger's writes that grow
with the ranges (a range's start, its result, its group's merge) are timed on
the driver's thread and printed as their marginal share of that cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.common import Clock, report, scratch
from parsl_es import api
from parsl_es.backends.parsl import TASK_LOGGER, ParslBackend
from parsl_es.sites import load_site


def noop() -> int:
    return 0


@contextmanager
def parsl_task_log(level: int) -> Iterator[None]:
    """Parsl's per-task log lines at ``level`` meanwhile (``backends.parsl.TASK_LOGGER``)."""
    logger = logging.getLogger(TASK_LOGGER)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def plain_parsl(session: ParslBackend, n: int) -> Clock:
    """``n`` no-op apps, Parsl logging each task as it does by itself (parsl-es turns
    those lines off for its own tasks; plain Parsl is measured as users get it)."""
    from parsl.app.app import python_app

    app = python_app(noop, executors=["local"], data_flow_kernel=session.dfk)
    with parsl_task_log(logging.INFO):
        app().result()  # warm
        with Clock() as clock:
            futures = [app() for _ in range(n)]
            for f in futures:
                f.result()
    return clock


def campaign(n: int) -> dict:
    """``n`` one-event ranges of a payload that does no work, written as small npy files."""
    return {
        "name": "dispatch",
        "events": n,
        "events_per_range": 1,
        "events_per_merge": max(1, n // 20),
        "seed": 1,
        "payload": {"name": "emulate", "output_format": "npy"},
    }


def parsl_es(session: ParslBackend, n: int, directory, bundle_size: int | None) -> tuple:
    spec = campaign(n)
    options = {} if bundle_size is None else {"bundle_size": bundle_size}
    with Clock() as clock:
        result = api.run_campaign(spec, directory / "es", session=session, **options)
    assert result.status == "complete", result.message
    return clock, result


def _timed_ledger_writes() -> dict[str, float]:
    """Time the ledger's writes whose cost grows with the ranges (a range's start, its
    result, its group's merge, which marks it merged) on the calling thread's CPU
    clock: the driver's thread."""
    import time

    from parsl_es.ledger.merges import MergeWrites
    from parsl_es.ledger.ranges import RangeWrites

    writes = ((RangeWrites, "start_ranges"), (RangeWrites, "record"), (MergeWrites, "finish_merge"))
    spent = {name: 0.0 for _, name in writes}
    for cls, name in writes:
        real = getattr(cls, name)

        def timed(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            t0 = time.thread_time()
            try:
                return _real(*args, **kwargs)
            finally:
                spent[_name] += time.thread_time() - t0

        setattr(cls, name, timed)
    return spent


def child(kind: str, n: int, bundle_size: int | None = None) -> None:
    """One side at one size, in this process; prints this process's CPU seconds last
    (and, for parsl-es, the CPU seconds of the ledger's writes)."""
    import time

    options = {} if bundle_size is None else {"bundle_size": bundle_size}
    ledger: dict[str, float] = {}
    with scratch("es-dispatch-") as tmp:
        if kind == "es":
            ledger = _timed_ledger_writes()
            result = api.run_campaign(campaign(n), tmp / "es", site="local", **options)
            assert result.status == "complete", result.message
        else:
            with ParslBackend(load_site("local"), tmp / "p") as session:
                plain_parsl(session, n)
        print(json.dumps({"cpu": time.process_time(), "ledger": ledger}), flush=True)


def marginal(small: int, large: int, bundle_size: int | None = None) -> None:
    cpu: dict[tuple[str, int], float] = {}
    ledger: dict[int, dict[str, float]] = {}
    fixed = [] if bundle_size is None else [str(bundle_size)]
    for kind in ("plain", "es"):
        for n in (small, large):
            run = subprocess.run(
                [sys.executable, "-m", "benchmarks.dispatch", "--child", kind, str(n), *fixed],
                capture_output=True,
                text=True,
                check=True,
            )
            last = json.loads(run.stdout.strip().splitlines()[-1])
            cpu[kind, n] = last["cpu"]
            if kind == "es":
                ledger[n] = last["ledger"]
    extra = large - small
    ledger_us = {
        name: round(1e6 * (ledger[large][name] - ledger[small][name]) / extra, 1)
        for name in ledger[large]
    }
    es_us = 1e6 * (cpu["es", large] - cpu["es", small]) / extra
    plain_us = 1e6 * (cpu["plain", large] - cpu["plain", small]) / extra
    figures = {
        "benchmark": "dispatch-marginal",
        "sizes": [small, large],
        "bundle_size": bundle_size or "adaptive",
        "parsl_es_process_cpu_s": [round(cpu["es", small], 2), round(cpu["es", large], 2)],
        "plain_parsl_process_cpu_s": [
            round(cpu["plain", small], 2),
            round(cpu["plain", large], 2),
        ],
        "parsl_es_marginal_cpu_us_per_range": round(es_us, 1),
        "plain_parsl_marginal_cpu_us_per_task": round(plain_us, 1),
        "cpu_ratio_plain_over_parsl_es": round(plain_us / es_us, 1),
        "parsl_es_ledger_writes_us_per_range": ledger_us,
    }
    report(
        figures,
        f"dispatch (marginal, {small:,} vs {large:,}): parsl-es {es_us:.1f} us of its "
        f"process's CPU per extra range (the ledger's writes {sum(ledger_us.values()):.1f} "
        f"us of it: {ledger_us}); plain Parsl {plain_us:.0f} us per extra task; "
        f"{plain_us / es_us:.1f}x less",
    )


def main() -> None:
    if len(sys.argv) in (4, 5) and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), *(int(b) for b in sys.argv[4:]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, default=100_000)
    parser.add_argument("--baseline-tasks", type=int, help="plain Parsl tasks (default: ranges)")
    parser.add_argument("--bundle-size", type=int, help="fixed bundle size (default: adaptive)")
    parser.add_argument("--quick", action="store_true", help="10,000 ranges, 5,000 tasks")
    parser.add_argument("--marginal", help="SMALL,LARGE: marginal CPU per range (see above)")
    args = parser.parse_args()
    if args.marginal:
        small, large = (int(x) for x in args.marginal.split(","))
        marginal(small, large, args.bundle_size)
        return
    n = 10_000 if args.quick else args.ranges
    n_plain = args.baseline_tasks or (5_000 if args.quick else n)
    with scratch("es-dispatch-") as tmp, ParslBackend(load_site("local"), tmp / "p") as session:
        plain = plain_parsl(session, n_plain)
        es, result = parsl_es(session, n, tmp, args.bundle_size)
    es_us = 1e6 * es.cpu / n
    plain_us = 1e6 * plain.cpu / n_plain
    figures = {
        "benchmark": "dispatch",
        "ranges": n,
        "parsl_es_cpu_us_per_range": round(es_us, 1),
        "parsl_es_ranges_per_s": round(n / es.wall, 1),
        "parsl_es_driver_limited_ranges_per_s": round(1e6 / es_us, 1),
        "plain_parsl_tasks": n_plain,
        "plain_parsl_cpu_us_per_task": round(plain_us, 1),
        "plain_parsl_tasks_per_s": round(n_plain / plain.wall, 1),
        "cpu_ratio_plain_over_parsl_es": round(plain_us / es_us, 1),
        "workers": result.workers,
        "wall_s": round(es.wall, 1),
    }
    report(
        figures,
        f"dispatch: parsl-es {es_us:.1f} us driver CPU per range ({n / es.wall:,.0f} ranges/s, "
        f"{n} ranges incl. merges and validation); plain Parsl {plain_us:.0f} us per task "
        f"({n_plain / plain.wall:,.0f} tasks/s); {plain_us / es_us:.1f}x less driver CPU",
    )


if __name__ == "__main__":
    main()
