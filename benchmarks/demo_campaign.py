"""The demo campaign's wall time and events/s, next to a plain loop in the same run.

parsl-es runs the shipped ``demo`` campaign on the local site (start-up, ranges,
merges and validation included). The baseline processes the same ranges with
the same payload in a plain ``multiprocessing.Pool`` of as many processes,
writing range files only: no Parsl, no ledger, no merge, no validation. The
ratio is what the event service costs (or saves) end to end on this machine.

    python -m benchmarks.demo_campaign [--quick] [--campaign demo]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path

from parsl_es import run
from parsl_es.campaign import CampaignSpec, load_campaign
from parsl_es.payloads import make_payload
from parsl_es.sites import load_site

_PAYLOAD = None


def _init(name: str, params: dict) -> None:
    global _PAYLOAD
    _PAYLOAD = make_payload(name, params)
    _PAYLOAD.setup()


def _simulate(args: tuple) -> int:
    r, directory = args
    return _PAYLOAD.simulate(r, Path(directory) / f"{r.id}.root")


def plain_loop(spec: CampaignSpec, workers: int, directory: Path) -> float:
    """Wall seconds for a process pool to simulate every range of the campaign."""
    plan = spec.plan
    work = [(plan.range(i), str(directory)) for i in range(plan.n_ranges)]
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(
        workers, initializer=_init, initargs=(spec.payload.name, spec.payload.params)
    ) as pool:
        events = sum(pool.imap_unordered(_simulate, work))
    assert events == plan.events
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaign", default="demo")
    parser.add_argument("--quick", action="store_true", help="a quarter of the events")
    args = parser.parse_args()
    spec = load_campaign(args.campaign)
    if args.quick:
        spec = spec.model_copy(update={"events": max(spec.events_per_merge, spec.events // 4)})
    workers = load_site("local").node_types["local"].workers()
    scratch = Path(tempfile.mkdtemp(prefix="parsl-es-bench-"))
    try:
        t0 = time.perf_counter()
        result = run.submit(spec, scratch / "es", site="local")
        es_wall = time.perf_counter() - t0
        assert result.status == "complete", result.message
        (scratch / "loop").mkdir()
        loop_wall = plain_loop(spec, workers, scratch / "loop")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {
        "benchmark": "demo_campaign",
        "campaign": spec.name,
        "events": spec.events,
        "ranges": spec.plan.n_ranges,
        "merges": spec.plan.n_merges,
        "workers": workers,
        "parsl_es_wall_s": round(es_wall, 2),
        "parsl_es_events_per_s": round(spec.events / es_wall, 2),
        "parsl_es_run_events_per_s": round(result.events_per_second, 2),
        "plain_loop_wall_s": round(loop_wall, 2),
        "plain_loop_events_per_s": round(spec.events / loop_wall, 2),
        "ratio_events_per_s": round(loop_wall / es_wall, 3),
    }
    print(json.dumps(figures))
    print(
        f"{spec.name}: {spec.events} events, {figures['ranges']} ranges, {figures['merges']} "
        f"merges in {es_wall:.1f} s ({figures['parsl_es_events_per_s']} ev/s, start-up, merge "
        f"and validation included); plain {workers}-process loop, simulation only: "
        f"{loop_wall:.1f} s; ratio {figures['ratio_events_per_s']}"
    )


if __name__ == "__main__":
    main()
