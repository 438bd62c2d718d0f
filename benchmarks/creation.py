"""Creating a campaign's output: the largest campaign accepted against the smallest.

``es-run submit`` checks the campaign, then creates its ledger with one row per
merge group. The largest campaign accepted (10^12 events in ``MAX_MERGE_GROUPS``
merge groups) is timed against a one-group campaign in the same run (the
baseline: SQLite's own cost of creating and syncing a ledger file). Each is
created ``--repeat`` times on the real file system (the ledger is fsynced);
the median is printed.

    python -m benchmarks.creation [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import report
from parsl_es.campaign import MAX_MERGE_GROUPS, CampaignSpec, campaign_from_dict
from parsl_es.ledger import Ledger


def spec(events: int, per_merge: int) -> CampaignSpec:
    return campaign_from_dict(
        {
            "name": "creation",
            "events": events,
            "events_per_range": 1,
            "events_per_merge": per_merge,
            "seed": 1,
            "payload": {"name": "emulate"},
        }
    )


def create_seconds(campaign: CampaignSpec, directory: Path, repeat: int) -> float:
    times = []
    for i in range(repeat):
        path = directory / f"ledger-{campaign.plan.n_merges}-{i}.sqlite"
        start = time.perf_counter()
        Ledger.create(path, {"campaign": campaign.to_json()}, campaign.plan).close()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    largest = spec(10**12, 10**12 // MAX_MERGE_GROUPS)
    smallest = spec(10, 10)
    with tempfile.TemporaryDirectory(prefix="creation-", dir=".") as tmp:
        baseline = create_seconds(smallest, Path(tmp), args.repeat)
        seconds = create_seconds(largest, Path(tmp), args.repeat)
    report(
        {
            "merge_groups": largest.plan.n_merges,
            "create_seconds": round(seconds, 4),
            "baseline_one_group_seconds": round(baseline, 4),
        },
        f"ledger of {largest.plan.n_merges} merge groups (10^12 events): {seconds:.3f} s; "
        f"one merge group: {baseline:.3f} s (median of {args.repeat})",
    )


if __name__ == "__main__":
    main()
