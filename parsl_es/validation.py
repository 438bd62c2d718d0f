"""Validation: prove that every event of the campaign is present exactly once.

Per merged file (as soon as it exists): its event numbers are exactly its
group's, in order; its checksum matches the ledger; its physics histograms are
filled and kept. For the campaign: every merged file is re-read and
re-checksummed, the union of their event numbers is exactly the campaign's
events with no duplicates, no stray files lie in ``merged/``, and the summed
histograms are plotted.

Where the payload can re-derive events (``Payload.check_events``), a sample of
each merged file is re-derived: events of a reproducible build must come back
identical (checked by value), events of a build that draws other random numbers
(a GPU build) are checked in distribution, with a rank test summed over the
whole campaign so its power grows with the campaign.

A rank test over few events cannot reject anything: with three ranks its
smallest possible p-value is exp(-n), so fewer than ``RANK_TEST_EVENTS_MIN``
(7) events pass whatever the build does. Where the per-file samples of such a
build add up to fewer, the campaign check re-derives more events of those files
until they do; a campaign too small for that says so in its report
(``event_check.power: "insufficient"`` and why) instead of passing silently.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from parsl_es import fileio
from parsl_es.dataset_plan import DatasetPlan
from parsl_es.merge_reports import VALIDATION_DIR, existing_merge_reports, merge_report_path
from parsl_es.numbering import expected_numbers
from parsl_es.payloads import Payload
from parsl_es.payloads.base import EventCheck
from parsl_es.physics_plots import campaign_histograms, histograms_to_json
from parsl_es.ranges import MergeGroup, RangePlan
from parsl_es.records import MergedFile, MergeRecord
from parsl_es.states import MergeState

#: Share of a merged file's events re-derived (each costs about one detector
#: simulation), and the least per file; the campaign-wide test sums them all.
EVENTS_CHECKED_FRACTION = 0.02
EVENTS_CHECKED_MIN = 2
#: The campaign fails validation if a rank test gives a p-value below this.
RANK_TEST_P_MIN = 1e-3
#: Ranks of a stored value among its fresh references (two references: 0, 1, 2).
RANK_CATEGORIES = 3


@dataclass
class EventTally:
    """The campaign's event numbers counted one merge group at a time.

    Groups partition the campaign, so "every event exactly once" holds exactly when
    each group's file holds each of its own events once and nothing else. Counting
    per group keeps memory to one group's events, not the campaign's (10^12 events
    would need 2 TB at two bytes each). An event found in another group's file is
    *misplaced*: a duplicate or a displaced event, a failure either way.
    """

    found: int = 0
    missing: int = 0
    duplicated: int = 0
    misplaced: int = 0  # inside the campaign, in another group's file
    outside: int = 0  # not an event of the campaign at all

    def add(self, numbers: np.ndarray, group: MergeGroup, plan: RangePlan | DatasetPlan) -> None:
        if isinstance(plan, DatasetPlan):
            self.add_listed(numbers, expected_numbers(plan, group))
            return
        self.found += len(numbers)
        own = (numbers >= group.first_event) & (numbers <= group.last_event)
        campaign = (numbers >= plan.first_event) & (numbers <= plan.last_event)
        self.misplaced += int((campaign & ~own).sum())
        self.outside += int((~campaign).sum())
        counts = np.bincount(numbers[own] - group.first_event, minlength=group.n_events)
        self.missing += int((counts == 0).sum())
        self.duplicated += int((counts > 1).sum())

    def add_listed(self, numbers: np.ndarray, expected: np.ndarray) -> None:
        """A group whose numbers are a dataset's: ``expected`` (unique), not contiguous.

        Any other number in its file counts as misplaced (another group's, or none).
        """
        self.found += len(numbers)
        wanted = np.sort(expected)
        at = np.clip(np.searchsorted(wanted, numbers), 0, max(len(wanted) - 1, 0))
        own = wanted[at] == numbers if len(wanted) else np.zeros(len(numbers), bool)
        self.misplaced += int((~own).sum())
        counts = np.bincount(at[own], minlength=len(wanted))
        self.missing += int((counts == 0).sum())
        self.duplicated += int((counts > 1).sum())

    def problems(self) -> list[str]:
        said = {
            "events missing": self.missing,
            "events present more than once": self.duplicated,
            "events in a merged file that is not their group's": self.misplaced,
            "events outside the campaign's range": self.outside,
        }
        return [f"{n} {what}" for what, n in said.items() if n]


def _check_file(
    payload: Payload, path: Path, expected: np.ndarray, checksum: str | None
) -> tuple[list[str], np.ndarray | None]:
    """Problems found in one merged file, and its event numbers if readable."""
    if not path.is_file():
        return [f"{path.name}: missing"], None
    problems = []
    actual = fileio.adler32(path)
    if checksum is not None and actual != checksum:
        problems.append(f"{path.name}: checksum {actual} != ledger {checksum}")
    try:
        numbers = np.asarray(payload.event_numbers(path), dtype=np.int64)
    except Exception as exc:
        return [*problems, f"{path.name}: unreadable ({exc})"], None
    if len(numbers) != len(expected) or not np.array_equal(numbers, expected):
        wanted = f"{expected[0]}..{expected[-1]}" if len(expected) else "none"
        problems.append(
            f"{path.name}: holds {len(numbers)} events, expected {len(expected)} events "
            f"{wanted} in order"
        )
    return problems, numbers


def validate_merged_file(
    payload: Payload,
    group: MergeGroup,
    output_dir: Path,
    merged: MergedFile,
    plan: RangePlan | DatasetPlan | None = None,
) -> dict[str, Any]:
    """Validate one merged file and write its report (with histograms).

    ``plan`` says which event numbers the group holds (a dataset's own); without
    it, the group's contiguous campaign numbers.
    """
    path = output_dir / merged.output
    if plan is None:
        expected = np.arange(group.first_event, group.last_event + 1, dtype=np.int64)
    else:
        expected = expected_numbers(plan, group)
    problems, numbers = _check_file(payload, path, expected, merged.checksum)
    hists: dict[str, Any] = {}
    check: EventCheck | None = None
    if numbers is not None and not problems:
        hists = histograms_to_json(payload.histograms(path))
        sample = max(EVENTS_CHECKED_MIN, math.ceil(EVENTS_CHECKED_FRACTION * len(numbers)))
        check = payload.check_events(path, group.campaign_seed, sample)
        if check is not None and check.mismatched:
            problems.append(
                f"{path.name}: events {check.mismatched[:5]} do not come out the same when "
                f"re-derived ({len(check.mismatched)} of "
                f"{check.exact_checked + check.statistical_checked} checked)"
            )
    report = {
        "group": group.index,
        "file": merged.output,
        "passed": not problems,
        "problems": problems,
        "n_events": 0 if numbers is None else len(numbers),
        "checksum": merged.checksum,
        "event_check": None if check is None else asdict(check),
        "histograms": hists,
        "validated_at": time.time(),
    }
    fileio.write_text_atomic(merge_report_path(output_dir, group.index), json.dumps(report))
    return {k: report[k] for k in ("group", "passed", "problems", "n_events")}


def validate_campaign_outputs(
    payload: Payload,
    plan: RangePlan,
    output_dir: Path,
    merges: list[MergeRecord],
    with_plots: bool = True,
) -> dict[str, Any]:
    """Re-read every merged file and prove the campaign's events are there exactly once.

    ``merges`` are the ledger's records of the merge groups (``Ledger.merge_records``).
    """
    problems: list[str] = []
    bad_groups: dict[int, str] = {}  # merged files to redo: missing, damaged, wrong events
    tally = EventTally()
    by_group = {m.group: m for m in merges}
    for g in range(plan.n_merges):
        group = plan.group(g)
        m = by_group.get(g)
        if m is None or m.output is None or m.state is not MergeState.DONE:
            problems.append(f"merge group {g}: no merged file recorded")
            tally.missing += group.n_events
            continue
        file_problems, numbers = _check_file(
            payload, output_dir / m.output, expected_numbers(plan, group), m.checksum
        )
        problems.extend(file_problems)
        if file_problems:
            bad_groups[g] = "; ".join(file_problems)
        if numbers is None:
            tally.missing += group.n_events
        else:
            tally.add(numbers, group, plan)
    recorded = {m.output for m in merges if m.output}
    merged_dir = output_dir / "merged"
    stray = sorted(
        str(p.relative_to(output_dir))
        for p in (merged_dir.iterdir() if merged_dir.is_dir() else [])
        if str(p.relative_to(output_dir)) not in recorded
    )
    if stray:
        problems.append(f"files in merged/ not in the ledger: {', '.join(stray[:5])}")
    problems.extend(tally.problems())
    plots = campaign_histograms(payload, plan, output_dir, merges) if with_plots else None
    event_check = _campaign_event_check(payload, plan, output_dir, by_group, bad_groups)
    problems.extend(event_check.pop("problems"))
    warnings = [event_check["power_reason"]] if event_check["power"] == "insufficient" else []
    report = {
        "campaign": plan.campaign,
        "passed": not problems,
        "problems": problems,
        "warnings": warnings,
        "events_expected": plan.events,
        "events_found": tally.found,
        "events_missing": tally.missing,
        "events_duplicated": tally.duplicated,
        "events_misplaced": tally.misplaced,
        "merged_files": len(recorded),
        "bad_groups": bad_groups,
        "event_check": event_check,
        "plots": plots,
        "validated_at": time.time(),
    }
    fileio.write_text_atomic(output_dir / VALIDATION_DIR / "campaign.json", json.dumps(report))
    return report


def rank_test_p_value(counts: list[int]) -> float:
    """p-value that ranks 0, 1, 2 are equally likely: Pearson chi-square, 2 degrees of freedom.

    The chi-square survival function with 2 degrees of freedom is exp(-x/2).
    """
    n = sum(counts)
    if n == 0:
        return 1.0
    expected = n / len(counts)
    chi2 = sum((c - expected) ** 2 / expected for c in counts)
    return math.exp(-chi2 / 2.0)


def rank_test_min_events(categories: int = RANK_CATEGORIES, p_min: float = RANK_TEST_P_MIN) -> int:
    """The fewest events for which the rank test can reject at all (all in one rank)."""
    n = 1
    while rank_test_p_value([n] + [0] * (categories - 1)) >= p_min:
        n += 1
    return n


#: Events of non-reproducible builds the campaign's rank test needs to be able to reject.
RANK_TEST_EVENTS_MIN = rank_test_min_events()


def _campaign_event_check(
    payload: Payload,
    plan: RangePlan,
    output_dir: Path,
    by_group: dict[int, MergeRecord],
    bad_groups: dict[int, str],
) -> dict[str, Any]:
    """Sum the merged files' event checks; a rank test per observable over all of them.

    If the events of non-reproducible builds sampled per file add up to fewer than
    the rank test needs to be able to reject, more of those files' events are
    re-derived here (the larger sample replaces the file's own).
    """
    checks: dict[int, dict[str, Any]] = {}
    for g, path in existing_merge_reports(output_dir, plan.n_merges):
        found = json.loads(path.read_text()).get("event_check")
        if found:
            checks[g] = found
    need = RANK_TEST_EVENTS_MIN
    topped_up = _top_up(payload, plan, output_dir, by_group, bad_groups, checks, need)
    total = _sum_checks(checks.values())
    p_values = {name: rank_test_p_value(c) for name, c in total.ranks.items()}
    problems = []
    if total.mismatched:
        problems.append(f"{len(total.mismatched)} events differ when re-derived")
    for name, p in p_values.items():
        if total.statistical_checked and p < RANK_TEST_P_MIN:
            problems.append(
                f"{name}: the GPU-built events disagree in distribution with the reference "
                f"(rank counts {total.ranks[name]}, p = {p:.2g} < {RANK_TEST_P_MIN:g})"
            )
    n = total.statistical_checked
    if n == 0:
        power, reason = "not needed", "no events of builds that are not bit-reproducible"
    elif n >= need:
        power, reason = "sufficient", f"{n} events in the rank test (at least {need} needed)"
    else:
        power = "insufficient"
        reason = (
            f"only {n} events of builds that are not bit-reproducible (GPU) could be "
            f"re-derived in this campaign; the rank test needs at least {need} to be able to "
            f"reject at p < {RANK_TEST_P_MIN:g}, so their distribution is unchecked"
        )
    return {
        **asdict(total),
        "rank_p_values": p_values,
        "power": power,
        "power_reason": reason,
        "rank_test_events_needed": need,
        "topped_up_groups": topped_up,
        "problems": problems,
    }


def _top_up(
    payload: Payload,
    plan: RangePlan,
    output_dir: Path,
    by_group: dict[int, MergeRecord],
    bad_groups: dict[int, str],
    checks: dict[int, dict[str, Any]],
    need: int,
) -> list[int]:
    """Re-derive larger samples of the files holding non-reproducible events, up to ``need``."""
    candidates = [
        g
        for g, c in checks.items()
        if c["statistical_checked"] and g not in bad_groups and g in by_group and by_group[g].output
    ]
    size = {g: checks[g]["exact_checked"] + checks[g]["statistical_checked"] for g in candidates}
    topped: set[int] = set()
    while (have := sum(c["statistical_checked"] for c in checks.values())) < need:
        growable = [g for g in candidates if size[g] < plan.group(g).n_events]
        if not growable:
            break
        share = -(-(need - have) // len(growable))
        for g in growable:
            size[g] = min(plan.group(g).n_events, size[g] + share)
            path = output_dir / str(by_group[g].output)
            check = payload.check_events(path, plan.seed, size[g])
            if check is None:
                candidates.remove(g)
                continue
            checks[g] = asdict(check)
            topped.add(g)
    return sorted(topped)


def _sum_checks(found_checks: Any) -> EventCheck:
    total = EventCheck()
    for found in found_checks:
        total.exact_checked += found["exact_checked"]
        total.statistical_checked += found["statistical_checked"]
        total.mismatched += found["mismatched"]
        for build, n in found["builds"].items():
            total.builds[build] = total.builds.get(build, 0) + n
        for name, counts in found["ranks"].items():
            mine = total.ranks.setdefault(name, [0] * len(counts))
            total.ranks[name] = [a + b for a, b in zip(mine, counts, strict=True)]
    return total
