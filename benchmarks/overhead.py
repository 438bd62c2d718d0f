"""What parsl-es costs on real work: the physics payload through parsl-es vs a plain loop.

The same events (ttbar at 13.6 TeV, 5-event ranges) are simulated twice on the
local site's cores:

- parsl-es: a campaign on a loaded local site (as in a notebook or a second
  campaign of a session), its throughput measured from submit to the last range
  done (simulation), and to the campaign complete (with merges and validation);
- a plain loop: a ``multiprocessing`` pool of as many processes calling the same
  payload's ``setup`` and ``simulate`` for every range, writing the same files.

Both include initialising the payload (Pythia's ``init``) in every process.

    python benchmarks/overhead.py [--events 400] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import time
from pathlib import Path

from benchmarks.common import report, scratch
from parsl_es import run
from parsl_es.campaign import campaign_from_dict
from parsl_es.payloads import make_payload
from parsl_es.session import SiteSession
from parsl_es.sites import load_site

_PAYLOAD = None


def _init(name: str, params: dict) -> None:
    global _PAYLOAD
    _PAYLOAD = make_payload(name, params)
    _PAYLOAD.setup()


def _simulate(args: tuple) -> int:
    r, directory = args
    return _PAYLOAD.simulate(r, Path(directory) / f"{r.id}.root")


def plain_loop(spec, workers: int, directory: Path) -> float:
    """Seconds for a process pool to simulate every range of the campaign."""
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
        loop_s = plain_loop(spec, workers, tmp / "loop")
        with SiteSession(site, tmp / "parsl") as session:
            t0 = time.time()
            result = run.submit(spec, tmp / "es", session=session)
            complete_s = time.time() - t0
            assert result.status == "complete", result.message
            conn = sqlite3.connect(tmp / "es" / "ledger.sqlite")
            last = conn.execute("SELECT MAX(finished) FROM ranges").fetchone()[0]
            conn.close()
            simulate_s = last - t0
    ratio = loop_s / simulate_s
    report(
        {
            "benchmark": "overhead",
            "events": events,
            "events_per_range": 5,
            "workers": workers,
            "plain_loop_s": round(loop_s, 2),
            "plain_loop_events_per_s": round(events / loop_s, 2),
            "parsl_es_simulation_s": round(simulate_s, 2),
            "parsl_es_events_per_s": round(events / simulate_s, 2),
            "parsl_es_with_merge_and_validation_s": round(complete_s, 2),
            "ratio_events_per_s": round(ratio, 3),
            "ratio_with_merge_and_validation": round(loop_s / complete_s, 3),
        },
        f"overhead: parsl-es {events / simulate_s:.2f} events/s vs plain {workers}-process loop "
        f"{events / loop_s:.2f} events/s: ratio {ratio:.3f} ({loop_s / complete_s:.3f} with "
        "merges and validation)",
    )


if __name__ == "__main__":
    main()
