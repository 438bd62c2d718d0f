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


def test_parsl_worker_path_is_read_from_its_worker_logs(tmp_path):
    """Two hand-overs in the window, one before it; lines as HTEX's worker writes them."""
    from benchmarks.handover import handovers

    head = "2026-12-01 02:39:18 HTEX-Worker-18-9320 MainThread-1 parsl...process_worker_pool:"
    events = [
        (100.000, "Received executor task 1"),
        (101.000, "Completed executor task 1"),  # before the window: not counted
        (101.010, "All processing finished for executor task 1"),
        (101.030, "Received executor task 2"),
        (102.000, "Completed executor task 2"),
        (102.004, "All processing finished for executor task 2"),
        (102.010, "Received executor task 3"),
        (103.000, "Completed executor task 3"),
        (103.002, "All processing finished for executor task 3"),
        (103.100, "Received executor task 4"),
    ]
    log = tmp_path / "block-0" / "abc" / "worker_18.log"
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"{t:.6f} {head}775 worker INFO: {what}\n" for t, what in events))
    path = handovers(tmp_path, 101.5, 104.0)
    assert path["returning_ms"]["count"] == 2
    assert path["returning_ms"]["mean"] == pytest.approx(3.0, abs=0.01)
    assert path["taking_ms"]["count"] == 2
    assert path["taking_ms"]["mean"] == pytest.approx(52.0, abs=0.01)
    assert path["worker_seconds"] == pytest.approx(0.11, abs=0.001)
