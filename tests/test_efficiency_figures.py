"""The efficiency benchmark's utilisation: what counts as a worker's busy time."""

from __future__ import annotations

import pytest

from benchmarks.efficiency import utilisation


def _two_workers_one_merging() -> tuple[list, list]:
    # worker a runs ranges 0-10 s; worker b runs ranges 0-7 s, then merges 7-10 s
    ranges = [(0.0, 5.0, "a"), (5.0, 10.0, "a"), (0.0, 7.0, "b")]
    merges = [(7.0, 10.0, "b")]
    return ranges, merges


def test_a_merge_on_a_worker_is_busy_time_not_a_tail():
    ranges, merges = _two_workers_one_merging()
    alone = utilisation(ranges, 2, t_submit=0.0)
    assert alone["steady"] == pytest.approx(17 / 20)
    assert alone["tail_s"] == pytest.approx(3.0)
    both = utilisation(ranges, 2, t_submit=0.0, steps=merges)
    assert both["steady"] == pytest.approx(1.0)
    assert both["tail_s"] == pytest.approx(0.0)


def test_work_after_the_last_range_is_outside_the_window():
    ranges, _ = _two_workers_one_merging()
    late = [(9.0, 30.0, "b")]  # a validation running past the end of the ranges
    figures = utilisation(ranges, 2, t_submit=0.0, steps=late)
    assert figures["steady"] == pytest.approx((17 + 1) / 20)
    assert figures["tail_s"] == pytest.approx(0.0)  # b was working when the ranges ended
