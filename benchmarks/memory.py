"""Driver memory: peak RSS of the driver process for campaigns of 10k, 100k and 1M events.

Each campaign runs in a fresh driver process on the local site (emulate payload,
npy output, 10 events per range, 1,000 events per merge). The baseline, in the
same process, is the RSS after the site is loaded and before the campaign starts:
what the campaign adds on top of Parsl.

    python -m benchmarks.memory [--quick]       # --quick: 10k and 100k events
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

from benchmarks.common import report, scratch

DRIVER = textwrap.dedent(
    """
    import json, resource, sys
    from pathlib import Path
    import psutil
    from parsl_es import api
    from parsl_es.backends.parsl import ParslBackend
    from parsl_es.sites import load_site
    events, directory = int(sys.argv[1]), Path(sys.argv[2])
    spec = {"name": "memory", "events": events, "events_per_range": 10,
            "events_per_merge": 1000, "seed": 1,
            "payload": {"name": "emulate", "output_format": "npy"}}
    with ParslBackend(load_site("local"), directory / "parsl") as session:
        import parsl_es.payloads.emulate  # noqa: F401 (loaded before the baseline)
        baseline = psutil.Process().memory_info().rss
        result = api.run_campaign(spec, directory / "out", session=session)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"status": result.status, "baseline": baseline, "peak": peak,
                          "wall": result.wall_seconds}))
    """
)


def measure(events: int) -> dict:
    with scratch("es-memory-") as tmp:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(events), str(tmp)],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["status"] == "complete", figures
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k events only")
    args = parser.parse_args()
    sizes = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = {}
    for events in sizes:
        f = measure(events)
        rows[events] = {
            "peak_rss_mb": round(f["peak"] / 2**20, 1),
            "baseline_rss_mb": round(f["baseline"] / 2**20, 1),
            "added_mb": round((f["peak"] - f["baseline"]) / 2**20, 1),
            "wall_s": round(f["wall"], 1),
        }
    largest = rows[sizes[-1]]
    report(
        {"benchmark": "memory", "events_per_range": 10, "campaigns": rows},
        "memory: driver peak RSS "
        + ", ".join(f"{e:,} events {r['peak_rss_mb']:.0f} MB" for e, r in rows.items())
        + f" (site loaded before the campaign: {largest['baseline_rss_mb']:.0f} MB)",
    )


if __name__ == "__main__":
    main()
