"""What parsl-es costs on real work: the physics payload through parsl-es vs a plain loop.

The same events (ttbar at 13.6 TeV, 5-event ranges, merged every 100 events)
are produced twice on the local site's cores:

- a plain loop: a ``multiprocessing`` pool of as many processes calling the same
  payload's ``setup``, ``simulate`` for every range and ``merge`` for every group,
  writing the same files; timed from creating the pool;
- parsl-es: the campaign on a loaded local site whose worker processes are up
  (as for any campaign after the first of a session, or in a notebook), timed
  from submit to the campaign complete: simulation, merges, and the validation
  the plain loop does not do (re-reading every merged file, re-deriving a sample
  of events, histograms).

Both include initialising the payload (Pythia's ``init``) in every process. The
simulation-only figures (submit to the last range done, against the loop without
its merges) are printed too.

    python -m benchmarks.overhead [--events 400] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

from benchmarks.common import report, scratch
from benchmarks.efficiency import wait_for_workers
from parsl_es import api
from parsl_es.backends.parsl import ParslBackend
from parsl_es.campaign import campaign_from_dict
from parsl_es.ledger import LEDGER_NAME, Ledger
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


def _merge(args: tuple) -> int:
    inputs, output = args
    return _PAYLOAD.merge([Path(p) for p in inputs], Path(output))


def plain_loop(spec, workers: int, directory: Path) -> tuple[float, float]:
    """Seconds for a process pool to simulate every range, and then to merge every group."""
    plan = spec.plan
    work = [(plan.range(i), str(directory)) for i in range(plan.n_ranges)]
    groups = [
        (
            [str(directory / f"{plan.range(i).id}.root") for i in plan.group(g).range_indices],
            str(directory / f"merged-{g}.root"),
        )
        for g in range(plan.n_merges)
    ]
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(
        workers, initializer=_init, initargs=(spec.payload.name, spec.payload.params)
    ) as pool:
        events = sum(pool.imap_unordered(_simulate, work))
        simulated = time.perf_counter() - t0
        merged = sum(pool.imap_unordered(_merge, groups))
    assert events == merged == plan.events
    return simulated, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--quick", action="store_true", help="100 events")
    args = parser.parse_args()
    events = 100 if args.quick else args.events
    spec = campaign_from_dict(
        {
            "name": "overhead",
            "events": events,
            "events_per_range": 5,
            "events_per_merge": 100,
            "seed": 20261122,
            "payload": {"name": "physics", "process": "ttbar"},
        }
    )
    site = load_site("local")
    workers = site.node_types["local"].workers()
    with scratch("es-overhead-") as tmp:
        (tmp / "loop").mkdir()
        loop_sim_s, loop_s = plain_loop(spec, workers, tmp / "loop")
        with ParslBackend(site, tmp / "parsl") as session:
            wait_for_workers(session, workers)
            t0 = time.time()
            result = api.run_campaign(spec, tmp / "es", session=session)
            complete_s = time.time() - t0
            assert result.status == "complete", result.message
            with Ledger.open(tmp / "es" / LEDGER_NAME, readonly=True) as ledger:
                last = max(r.finished for r in ledger.ranges() if r.finished is not None)
            simulate_s = last - t0
    ratio = loop_s / complete_s
    report(
        {
            "benchmark": "overhead",
            "events": events,
            "events_per_range": 5,
            "workers": workers,
            "plain_loop_s": round(loop_s, 2),
            "plain_loop_events_per_s": round(events / loop_s, 2),
            "parsl_es_s": round(complete_s, 2),
            "parsl_es_events_per_s": round(events / complete_s, 2),
            "ratio_events_per_s": round(ratio, 3),
            "plain_loop_simulation_only_s": round(loop_sim_s, 2),
            "parsl_es_to_last_range_s": round(simulate_s, 2),
            "ratio_simulation_only": round(loop_sim_s / simulate_s, 3),
        },
        f"overhead: parsl-es {events / complete_s:.2f} events/s (simulate, merge, validate) vs "
        f"plain {workers}-process loop {events / loop_s:.2f} events/s (simulate, merge): ratio "
        f"{ratio:.3f}; simulation only {loop_sim_s / simulate_s:.3f}",
    )


if __name__ == "__main__":
    main()
