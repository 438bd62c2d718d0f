"""Tools of the benchmarks that decide what a figure means: py-spy summaries, the
ledger-writes comparison."""

from __future__ import annotations

import pytest


def test_a_py_spy_summary_keeps_one_threads_stacks_when_asked(tmp_path):
    """Shares are of every sample the rate allows; ``only`` keeps stacks through a frame."""
    from benchmarks.pyspy import summary

    raw = tmp_path / "raw.txt"
    raw.write_text(
        "main (a.py:1);Dispatcher.run (d.py:2);record (r.py:3) 30\n"
        "main (a.py:1);Dispatcher.run (d.py:2);top_up (s.py:4) 10\n"
        "Thread.run (t.py:5);recv (c.py:6) 20\n"
    )
    everything = summary(raw, seconds=1.0, rate=100)
    assert everything["busy"] == pytest.approx(0.6)
    driver = summary(raw, seconds=1.0, rate=100, only="Dispatcher.run")
    assert driver["busy"] == pytest.approx(0.4)
    assert dict(driver["own"]) == {"record (r.py)": 0.3, "top_up (s.py)": 0.1}
    assert "recv (c.py)" not in dict(driver["inclusive"])


def test_the_ledger_writes_benchmark_writes_every_result_once_in_each_layout():
    """Every UPDATE finds its running range (rows_written), and every layout is timed."""
    from benchmarks.ledger_writes import LAYOUTS, main

    figures = main(["--ranges", "1000", "--bundle", "7", "--tasks-per-drain", "5"])
    assert set(figures["layouts"]) == set(LAYOUTS)
    for layout in figures["layouts"].values():
        assert layout["rows_written"] == 1000
        assert layout["us_per_range"] > 0
