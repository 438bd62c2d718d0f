"""The driver's garbage-collector thresholds: set for a run, put back after the last one."""

from __future__ import annotations

import gc

import pytest

from parsl_es.engine.collector import DRIVER_THRESHOLDS, CollectorThresholds, driver_collector
from parsl_es.engine.result import RunStatus
from tests.engine_helpers import backend, drive, new_campaign

DRIVER = (DRIVER_THRESHOLDS.young, DRIVER_THRESHOLDS.middle, DRIVER_THRESHOLDS.full)


@pytest.fixture
def own_thresholds():
    """The process's thresholds, made distinct from both CPython's and the driver's."""
    before = gc.get_threshold()
    gc.set_threshold(701, 11, 12)
    yield (701, 11, 12)
    gc.set_threshold(*before)


def test_a_run_relaxes_the_thresholds_and_puts_them_back(tmp_path, own_thresholds):
    seen = []
    result = drive(
        new_campaign(tmp_path),
        backend(),
        on_progress=lambda progress: seen.append(gc.get_threshold()),
    )
    assert result.status is RunStatus.COMPLETE
    assert seen and set(seen) == {DRIVER}
    assert gc.get_threshold() == own_thresholds


def test_overlapping_runs_restore_only_when_the_last_ends(own_thresholds):
    first, second = driver_collector(), driver_collector()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # (not nested: the first to start ends first)
    assert gc.get_threshold() == DRIVER
    second.__exit__(None, None, None)
    assert gc.get_threshold() == own_thresholds


def test_an_exception_puts_the_thresholds_back(own_thresholds):
    with pytest.raises(RuntimeError), driver_collector(CollectorThresholds(9_000, 3, 4)):
        assert gc.get_threshold() == (9_000, 3, 4)
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == own_thresholds


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        CollectorThresholds(young=0)
    assert DRIVER_THRESHOLDS.allocations_per_full_collection() == 100_000_000


def test_a_run_can_keep_the_process_thresholds(tmp_path, own_thresholds):
    seen = []
    drive(
        new_campaign(tmp_path),
        backend(),
        collector=None,
        on_progress=lambda progress: seen.append(gc.get_threshold()),
    )
    assert seen and set(seen) == {own_thresholds}
