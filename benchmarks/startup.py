"""Start-up: from ``es-run submit`` to the first event range done, on the local site.

Next to it, in the same run, plain Parsl: from starting a Python process to the
first result of a no-op app on the same local executor configuration. Both
include interpreter start, imports and the worker pool coming up.

    python -m benchmarks.startup [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from benchmarks.common import report, scratch

ES_RUN = str(Path(sys.executable).parent / "es-run")

PLAIN = textwrap.dedent(
    """
    import sys, time
    t0 = float(sys.argv[1])
    from parsl.app.app import python_app
    from parsl_es.backends.parsl import ParslBackend
    from parsl_es.sites import load_site
    def noop():
        return 0
    with ParslBackend(load_site("local"), sys.argv[2]) as s:
        app = python_app(noop, executors=["local"], data_flow_kernel=s.dfk)
        app().result()
        print(time.time() - t0, flush=True)
    """
)


def first_done(ledger: Path) -> bool:
    if not ledger.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT 1 FROM ranges WHERE state IN ('done','merged') LIMIT 1")
            return row.fetchone() is not None
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def es_run_startup(directory: Path) -> float:
    campaign = directory / "c.yaml"
    campaign.write_text(
        "name: startup\nevents: 200\nevents_per_range: 1\nevents_per_merge: 100\nseed: 1\n"
        "payload: {name: emulate, seconds_per_event: 0.01, output_format: npy}\n"
    )
    out = directory / "out"
    t0 = time.time()
    proc = subprocess.Popen(
        [ES_RUN, "submit", str(campaign), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not first_done(out / "ledger.sqlite"):
            if proc.poll() is not None and not first_done(out / "ledger.sqlite"):
                raise RuntimeError("es-run ended before a range was done")
            time.sleep(0.02)
        return time.time() - t0
    finally:
        proc.wait(120)


def plain_startup(directory: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, str(time.time()), str(directory / "plain")],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    es, plain = [], []
    for i in range(repeat):
        with scratch("es-startup-") as tmp:
            es.append(es_run_startup(tmp))
        with scratch("es-startup-") as tmp:
            plain.append(plain_startup(tmp / f"p{i}"))
    es_s, plain_s = statistics.median(es), statistics.median(plain)
    report(
        {
            "benchmark": "startup",
            "repeats": repeat,
            "es_run_submit_to_first_range_s": round(es_s, 2),
            "plain_parsl_to_first_result_s": round(plain_s, 2),
            "ratio": round(es_s / plain_s, 2),
            "all_es_run_s": [round(x, 2) for x in es],
        },
        f"startup: es-run submit -> first range done {es_s:.2f} s (median of {repeat}); "
        f"plain Parsl process -> first no-op result {plain_s:.2f} s; ratio {es_s / plain_s:.2f}",
    )


if __name__ == "__main__":
    main()
