"""Merge lag: how long a complete merge group waits for its merge, merges first or in turn.

The driver keeps bundles of ranges queued ahead of the workers so that none waits
for work. A merge queued behind them waits for them; queued first (HTEX's task
priority, the engine's default since 2026-12-01) it takes the next free worker.
Both runs use the same campaign on the simulated machine (a virtual clock: the
figures are the queueing policy's, whatever this machine's load), through the real
engine and a real ledger on disk. A merge's lag: from its group's last range
finishing to the merge finishing (a merge itself takes 0.05 s here).

    python -m benchmarks.merge_lag                  # 2,000 workers x 0.1 s, 10^6 ranges
    python -m benchmarks.merge_lag --workers 1000 --range-seconds 15 --ranges 20000 \
        --ranges-per-merge 100                      # physics-length ranges
    python -m benchmarks.merge_lag --quick          # 200 workers, 20,000 ranges
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
from pathlib import Path

from benchmarks.common import merges_in_turn, one_event_campaign, report, scratch
from parsl_es.backends.base import Backend
from parsl_es.backends.sim_spec import SimNodeType
from parsl_es.backends.simulated import SimulatedBackend
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.steps import SIMULATION_CAMPAIGN, Placement, StepSpec
from parsl_es.ledger import LEDGER_NAME, Ledger


def simulated(args: argparse.Namespace) -> tuple[Backend, str]:
    """The simulated machine's one node type: ``args.workers`` in pools of 128."""
    node = SimNodeType(
        workers=args.workers,
        pools=max(1, args.workers // 128),
        range_seconds=args.range_seconds,
        spread=args.spread,
    )
    return SimulatedBackend({"cpu": node}, seed=args.seed), "cpu"


def lags(
    directory: Path,
    steps: tuple[StepSpec, ...],
    args: argparse.Namespace,
    backend: tuple[Backend, str] | None = None,
) -> dict:
    """One campaign on ``backend`` (the simulated machine if None): its merges' lags (s)
    behind their groups' last ranges. On a real backend, ranges sleep ``range_seconds``."""
    sim, node_type = backend or simulated(args)
    out = directory / "out"
    slept = {"seconds_per_event": args.range_seconds} if backend is not None else {}
    one_event_campaign(out, "merge-lag", args.ranges, args.ranges_per_merge, args.seed, **slept)
    with Ledger.open(out / LEDGER_NAME) as ledger:
        params = ledger.campaign_json()["payload"]
        result = Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            payload=(params.pop("name"), params),
            placement=Placement(simulate=[node_type], merge=node_type, validate=node_type),
            settings=Settings(attempts=3),
            steps=steps,
        ).run()
    if result.status != "complete":
        raise SystemExit(f"the campaign did not complete: {result.message}")
    # read back with SQLite alone: when each group's last range and its merge finished
    db = sqlite3.connect(f"file:{out / LEDGER_NAME}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT m.group_idx, m.finished, MAX(r.finished) FROM merges m "
            "JOIN ranges r ON r.idx BETWEEN m.first_range AND m.last_range "
            "GROUP BY m.group_idx"
        ).fetchall()
    finally:
        db.close()
    lag = sorted(merged - last for _, merged, last in rows)
    return {
        "merges": len(lag),
        "lag_median_s": round(statistics.median(lag), 3),
        "lag_p90_s": round(lag[int(0.9 * (len(lag) - 1))], 3),
        "lag_max_s": round(lag[-1], 3),
        "campaign_s": round(result.wall_seconds, 2),
    }


def real(tmp: Path, args: argparse.Namespace) -> tuple[dict, dict]:
    """Both orders on the real local site (HTEX on loopback), in one Parsl session."""
    from parsl_es.backends.parsl import ParslBackend
    from parsl_es.sites import load_site

    site = load_site("local")
    node_type = next(iter(site.node_types))
    with ParslBackend(site, tmp / "parsl") as session:
        args.workers = session.expected_workers(node_type)
        lags(tmp / "warm-up", SIMULATION_CAMPAIGN, args, (session, node_type))
        in_turn = lags(tmp / "in_turn", merges_in_turn(), args, (session, node_type))
        first = lags(tmp / "first", SIMULATION_CAMPAIGN, args, (session, node_type))
    return in_turn, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2000)
    parser.add_argument("--range-seconds", type=float, default=0.1)
    parser.add_argument("--spread", type=float, default=0.1, help="log-normal sigma")
    parser.add_argument("--ranges", type=int, default=1_000_000)
    parser.add_argument("--ranges-per-merge", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="200 workers, 20,000 ranges")
    parser.add_argument(
        "--real",
        action="store_true",
        help="on the local site's HTEX instead: 600 ranges of 0.05 s, 20 per merge",
    )
    args = parser.parse_args()
    if args.quick:
        args.workers, args.ranges, args.ranges_per_merge = 200, 20_000, 200
    if args.real:
        args.range_seconds, args.ranges, args.ranges_per_merge = 0.05, 600, 20
    with scratch("es-merge-lag-") as tmp:
        if args.real:
            in_turn, first = real(tmp, args)
        else:
            in_turn = lags(tmp / "in_turn", merges_in_turn(), args)
            first = lags(tmp / "first", SIMULATION_CAMPAIGN, args)
    figures = {
        "benchmark": "merge_lag",
        "backend": "local site (HTEX)" if args.real else "simulated",
        "workers": args.workers,
        "range_seconds": args.range_seconds,
        "spread": args.spread,
        "ranges": args.ranges,
        "ranges_per_merge": args.ranges_per_merge,
        "merges_first": first,
        "merges_in_turn": in_turn,
    }
    report(
        figures,
        f"merge lag, {args.workers:,} workers x {args.range_seconds} s: median "
        f"{first['lag_median_s']} s merges first, {in_turn['lag_median_s']} s in turn "
        f"(max {first['lag_max_s']} s against {in_turn['lag_max_s']} s)",
    )


if __name__ == "__main__":
    main()
