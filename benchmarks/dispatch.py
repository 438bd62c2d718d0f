"""Driver CPU per event range: parsl-es against plain Parsl on the same executor.

A campaign of one-event ranges whose payload does no work (``emulate`` with
npy output), and plain Parsl running as many no-op apps on the same loaded
executor. Both are measured by the driver process's CPU time (all its threads,
Parsl's included; the interchange and the workers are other processes) and by
wall time. Outputs go to tmpfs, so the figure is the engine's, not the disk's.

    python -m benchmarks.dispatch [--ranges 100000] [--quick]
"""

from __future__ import annotations

import argparse

from benchmarks.common import Clock, report, scratch
from parsl_es import api
from parsl_es.backends.parsl import ParslBackend
from parsl_es.sites import load_site


def noop() -> int:
    return 0


def plain_parsl(session: ParslBackend, n: int) -> Clock:
    from parsl.app.app import python_app

    app = python_app(noop, executors=["local"], data_flow_kernel=session.dfk)
    app().result()  # warm
    with Clock() as clock:
        futures = [app() for _ in range(n)]
        for f in futures:
            f.result()
    return clock


def parsl_es(session: ParslBackend, n: int, directory, bundle_size: int | None) -> tuple:
    spec = {
        "name": "dispatch",
        "events": n,
        "events_per_range": 1,
        "events_per_merge": max(1, n // 20),
        "seed": 1,
        "payload": {"name": "emulate", "output_format": "npy"},
    }
    options = {} if bundle_size is None else {"bundle_size": bundle_size}
    with Clock() as clock:
        result = api.run_campaign(spec, directory / "es", session=session, **options)
    assert result.status == "complete", result.message
    return clock, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, default=100_000)
    parser.add_argument("--baseline-tasks", type=int, help="plain Parsl tasks (default: ranges)")
    parser.add_argument("--bundle-size", type=int, help="fixed bundle size (default: adaptive)")
    parser.add_argument("--quick", action="store_true", help="10,000 ranges, 5,000 tasks")
    args = parser.parse_args()
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
