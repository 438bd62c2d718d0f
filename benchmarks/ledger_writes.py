"""What a range's result costs the ledger, and what other layouts would cost.

At 100,000 ranges a second the driver's thread spent about a quarter of its time
in one statement: the UPDATE that marks a range done (``benchmarks.scale
--sample``). This measures that write on its own, on a ledger made as ``es-run
submit`` makes it and filled as the engine fills it (``start_ranges``), with
results arriving as they do on a big machine: a bundle's consecutive ranges
together, bundles in random order over the whole in-flight region. Next to it,
in the same run and with the same rows, two layouts the ledger does not have:

* ``update_with_unmerged_index``: the same UPDATE on a ledger of versions 5 and 6,
  which kept a partial index of unmerged ranges (version 7 reads them through the
  open merge groups instead: ``schema.OPEN_RANGES``);
* ``append_results``: the same columns INSERTed into a table of results of its
  own, in arrival order (a range's row left as it was started).

Each layout is timed on a fresh ledger (scratch directory in memory), wall time
of the writes alone, one transaction per drain of ``--tasks-per-drain`` tasks.

    python -m benchmarks.ledger_writes [--ranges 2000000] [--bundle 60]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import scratch
from parsl_es.campaign import campaign_from_dict
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.ledger.core import checked_states
from parsl_es.ledger.ranges import _MARK_DONE
from parsl_es.ledger.schema import UNMERGED_INDEX_V5

_APPEND = (
    "INSERT INTO results (idx, attempt, task, started, finished, output, size, checksum, "
    "n_events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RESULTS = (
    "CREATE TABLE results (idx INTEGER NOT NULL, attempt INTEGER NOT NULL, task INTEGER, "
    "started REAL, finished REAL, output TEXT, size INTEGER, checksum TEXT, n_events INTEGER)"
)
#: layout -> (what is done to a fresh ledger first, the statement, a row's parameters)
Row = tuple  # (task, started, finished, output, size, checksum, n_events, idx, attempt)
LAYOUTS: dict[str, tuple[str | None, str, Callable[[Row], tuple]]] = {
    "update": (None, _MARK_DONE, lambda r: r),
    "update_with_unmerged_index": (UNMERGED_INDEX_V5, _MARK_DONE, lambda r: r),
    "append_results": (_RESULTS, _APPEND, lambda r: (r[7], r[8], *r[:7])),
}


def new_ledger(directory: Path, ranges: int) -> Ledger:
    """A ledger as ``es-run submit`` makes it, every range started as the engine starts
    them (spans of fresh ranges)."""
    spec = campaign_from_dict(
        {
            "name": "writes",
            "events": ranges,
            "events_per_range": 1,
            "events_per_merge": 20_000,
            "seed": 1,
            "payload": {"name": "emulate", "output_format": "npy"},
        }
    )
    ledger = Ledger.create(directory / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan)
    for first in range(0, ranges, 100_000):
        ledger.start_ranges([("cpu", range(first, min(ranges, first + 100_000)))], 1.0, 0)
    return ledger


def drains(ranges: int, bundle: int, per_drain: int, seed: int) -> list[list[list[Row]]]:
    """Results as they come back: bundles of consecutive ranges in random order, grouped
    into drains; each row as the engine's UPDATE takes it."""
    firsts = list(range(0, ranges, bundle))
    random.Random(seed).shuffle(firsts)
    tasks = [
        [
            (
                1,
                1.0,
                2.0,
                f"ranges/group-{i // 20_000:06d}/writes-{i}-{i}.attempt-1.npy",
                100,
                "0a0b0c0d",
                1,
                i,
                1,
            )
            for i in range(first, min(ranges, first + bundle))
        ]
        for first in firsts
    ]
    return [tasks[k : k + per_drain] for k in range(0, len(tasks), per_drain)]


def time_layout(name: str, ranges: int, batches: list[list[list[Row]]]) -> dict:
    """Seconds per range of writing every result under layout ``name``; and whether
    each statement touched one row (the UPDATE finds a running range every time)."""
    prepare, statement, params = LAYOUTS[name]
    with scratch("es-writes-") as tmp:
        ledger = new_ledger(tmp, ranges)
        conn = ledger._conn
        if prepare:
            conn.execute(prepare)
        rows = [[[params(r) for r in task] for task in drain] for drain in batches]
        written = 0
        started = time.perf_counter()  # (the writes alone: their rows are ready)
        for drain in rows:
            with ledger.transaction(), checked_states(conn):
                for task in drain:
                    written += conn.executemany(statement, task).rowcount
        seconds = time.perf_counter() - started
        ledger.close()
    return {"us_per_range": round(1e6 * seconds / ranges, 2), "rows_written": written}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranges", type=int, default=2_000_000, help="ranges in flight")
    parser.add_argument("--bundle", type=int, default=60, help="ranges per task")
    parser.add_argument("--tasks-per-drain", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    batches = drains(args.ranges, args.bundle, args.tasks_per_drain, args.seed)
    layouts = {name: time_layout(name, args.ranges, batches) for name in LAYOUTS}
    figures = {"benchmark": "ledger_writes", **vars(args), "layouts": layouts}
    base = layouts["update"]["us_per_range"]
    print(
        "ledger writes per range result: "
        + ", ".join(f"{n} {v['us_per_range']} us" for n, v in layouts.items())
        + f" (the engine's UPDATE is the baseline: {base} us)",
        flush=True,
    )
    print(json.dumps(figures), flush=True)
    return figures


if __name__ == "__main__":
    main()
