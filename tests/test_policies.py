"""The engine's policies, each on its own: pure decisions from numbers, no backend, no clock."""

from __future__ import annotations

import threading

import pytest

from parsl_es.backends.base import WorkLost
from parsl_es.backends.simulated import SimNodeType, SimulatedBackend
from parsl_es.engine.context import LostWork
from parsl_es.engine.cutoff import Cutoff
from parsl_es.engine.ending import RunEnd, decide
from parsl_es.engine.estimates import DurationEstimate, Estimates
from parsl_es.engine.feed import RangeFeed
from parsl_es.engine.inflight import InFlight
from parsl_es.engine.result import RunStatus
from parsl_es.engine.sizing import (
    MAX_BUNDLE,
    bundle_size,
    bundle_sizer,
    top_up_limit,
    window_size,
)
from parsl_es.engine.timeouts import MIN_SAMPLES, RangeTimeouts, TimeoutPolicy
from parsl_es.engine.watchdog import PoolWatch
from parsl_es.records import PoolInfo
from parsl_es.states import (
    AttemptCounts,
    Outcome,
    RangeState,
    RetryBudget,
    after_outcome,
    check_transition,
)

# --- the retry budget ---------------------------------------------------------------------


def test_payload_failures_use_attempts_and_the_last_one_is_fatal():
    budget = RetryBudget(attempts=3)
    counts = AttemptCounts()
    for expected in (RangeState.FAILED, RangeState.FAILED, RangeState.FATAL):
        state, counts = after_outcome(Outcome.FAILED, counts, budget)
        assert state is expected
    assert counts == AttemptCounts(failures=3, lost=0)


def test_lost_and_timed_out_attempts_are_capped_apart_from_failures():
    budget = RetryBudget(attempts=2, lost_factor=3)
    counts = AttemptCounts(failures=1)  # one payload failure already
    for n in range(1, budget.max_lost):
        outcome = Outcome.LOST if n % 2 else Outcome.TIMEOUT
        state, counts = after_outcome(outcome, counts, budget)
        assert state is RangeState.FAILED, n
    state, counts = after_outcome(Outcome.LOST, counts, budget)
    assert state is RangeState.FATAL
    assert counts == AttemptCounts(failures=1, lost=6)


def test_permanent_failures_are_fatal_at_once_and_done_is_done():
    budget = RetryBudget(attempts=100)
    assert after_outcome(Outcome.FATAL, AttemptCounts(), budget)[0] is RangeState.FATAL
    assert after_outcome(Outcome.DONE, AttemptCounts(1, 1), budget) == (
        RangeState.DONE,
        AttemptCounts(1, 1),
    )
    with pytest.raises(ValueError):
        after_outcome(Outcome.LATE, AttemptCounts(), budget)


def test_the_state_machine_refuses_moves_it_does_not_know():
    check_transition(RangeState.RUNNING, RangeState.DONE)
    check_transition(RangeState.DONE, RangeState.MERGED)
    with pytest.raises(RuntimeError, match="cannot go from done to running"):
        check_transition(RangeState.DONE, RangeState.RUNNING)
    with pytest.raises(RuntimeError):
        check_transition(RangeState.READY, RangeState.DONE)


def test_lost_work_runs_again_within_the_budget_only_when_lost():
    backend = SimulatedBackend({"cpu": SimNodeType()})
    stop = threading.Event()
    lost = LostWork(RetryBudget(attempts=1, lost_factor=2), backend, stop)
    assert not lost.again(RuntimeError("a bug"), "merge-0")
    assert lost.again(WorkLost("x"), "merge-0")
    assert lost.again(WorkLost("x"), "merge-0")
    assert not lost.again(WorkLost("x"), "merge-0")  # 2 x 1 lost tries spent
    assert lost.again(WorkLost("x"), "merge-1")  # counted per piece of work
    stop.set()
    assert not lost.again(WorkLost("x"), "merge-2")  # nothing new while stopping


# --- sizes ---------------------------------------------------------------------------------


def test_bundle_size_follows_range_duration_and_the_tail():
    assert bundle_size(None, workers=8, remaining=10_000) == 1  # nothing known yet
    assert bundle_size(0.001, workers=2, remaining=10_000) == 250  # 0.25 s of work
    assert bundle_size(1e-6, workers=2, remaining=100_000) == MAX_BUNDLE
    assert bundle_size(0.0005, workers=2, remaining=100_000) == 500  # 0.25 s, not capped
    assert bundle_size(1.0, workers=2, remaining=10_000) == 1  # long ranges travel alone
    assert bundle_size(0.01, workers=2, remaining=12, prefetch=2.0) == 3  # the tail's share
    assert bundle_size(0.001, workers=2, remaining=0) == 1
    # many workers in one pool: bundles grow so that it asks for at most ~50 tasks/s
    assert bundle_size(0.1, workers=1000, remaining=10**7) == 200
    assert bundle_size(0.0005, workers=8, remaining=100_000) == 500
    assert bundle_size(0.05, workers=8, remaining=100_000) == 5  # about 0.25 s per task
    assert bundle_size(0.05, workers=8, remaining=40) == 3
    assert bundle_size(0.05, workers=8, remaining=3) == 1


def test_the_tail_never_asks_a_pool_for_more_tasks_than_it_can_hand_out():
    # 128 workers x 0.1 s: single-range bundles would ask one pool for 1,280 tasks/s;
    # at the end bundles shrink only to what keeps it near 200 tasks/s (7 ranges)
    assert bundle_size(0.1, workers=128, remaining=100) == 7
    assert bundle_size(0.1, workers=128, remaining=10**6) == 25  # before the tail
    assert bundle_size(0.001, workers=2, remaining=12) == 10  # 1 ms ranges: 10 ms tasks
    assert bundle_size(1.0, workers=128, remaining=3) == 1  # long ranges: one by one


def test_bundles_follow_pools_and_the_driver_not_the_machine():
    # 1,000 workers in 8 pools: each pool may ask for 50 tasks/s, not the node type
    assert bundle_size(0.1, workers=1000, remaining=10**7, pools=8) == 25
    # Perlmutter's 3,072 CPU nodes x 128 workers, 15 s ranges: 26,000 ranges/s
    # reach the driver as at most 1,000 tasks/s (bundles of 26, not of 256)
    assert bundle_size(15.0, workers=393_216, remaining=10**7, pools=3072) == 26
    assert bundle_size(15.0, workers=128, remaining=10**7, pools=1) == 1


def test_window_is_one_task_per_worker_until_durations_are_known():
    assert window_size(None, expected=8, durations_known=False, prefetch=2.0) == 8
    assert window_size(0, expected=0, durations_known=True, prefetch=2.0) == 1
    assert window_size(10, expected=8, durations_known=False, prefetch=2.0) == 10
    assert window_size(10, expected=8, durations_known=True, prefetch=2.0) == 20
    assert window_size(3, expected=8, durations_known=True, prefetch=1.5) == 5


# --- the feed and what is in flight ------------------------------------------------------------


def test_feed_serves_retries_first_then_untouched_ranges_in_order():
    feed = RangeFeed(n_ranges=10, cursor=4, retry=[1, 2])
    assert feed.left() == 8
    assert feed.take(3) == [1, 2, 4]
    feed.retry_first(9)  # not untouched: 9 is beyond the cursor only by coincidence
    feed.redo([0])
    assert feed.take(2) == [0, 9]
    assert feed.take(100) == range(5, 10)  # fresh alone: one span for the ledger
    assert not feed and len(feed.take(1)) == 0


def test_in_flight_expires_late_bundles_except_where_nobody_could_run_them():
    flight = InFlight(["cpu", "gpu"])
    a = flight.add("cpu", [(0, 1), (1, 1)], allowance=10.0, now=0.0)
    flight.add("gpu", [(2, 1)], allowance=10.0, now=0.0)
    assert (flight.ranges(), flight.all_tasks(), flight.tasks("cpu")) == (3, 2, 1)
    assert flight.expire(now=5.0) == []
    expired = flight.expire(now=11.0, idle=["gpu"])
    assert [b.work for b in expired] == [[(0, 1), (1, 1)]]
    assert flight.pop(a) is None  # already given up on
    assert flight.expire(now=20.0) == []  # gpu's deadline moved on to 21
    assert [b.node_type for b in flight.expire(now=21.5)] == ["gpu"]
    assert not flight


def test_a_bundle_gets_a_whole_allowance_after_its_node_type_was_last_idle():
    """Also a bundle not yet due while nobody was connected (its deadline moves when it
    comes up, not at every check)."""
    flight = InFlight(["gpu"])
    flight.add("gpu", [(0, 1)], allowance=10.0, now=0.0)  # due at 10
    assert flight.expire(now=8.0, idle=["gpu"]) == []  # nobody connected at 8
    assert flight.expire(now=12.0) == []  # a whole allowance after 8: 18
    assert flight.earliest_deadline() == 18.0
    assert [b.work for b in flight.expire(now=18.5)] == [[(0, 1)]]


def test_the_earliest_deadline_follows_bundles_as_they_come_and_go():
    flight = InFlight(["cpu"])
    ids = [flight.add("cpu", [(i, 1)], allowance=100.0 - i, now=0.0) for i in range(3000)]
    assert flight.earliest_deadline() == 100.0 - 2999
    for bid in ids[2000:]:
        flight.pop(bid)  # their results came
    assert flight.earliest_deadline() == 100.0 - 1999
    late = flight.expire(now=100.0 - 1989.5)  # deadlines 1..10.5 passed: ranges 1990..1999
    assert sorted(b.work[0][0] for b in late) == list(range(1990, 2000))
    assert flight.all_tasks() == 1990 and flight.earliest_deadline() == 100.0 - 1989
    for i in range(5000):  # many come and go: the heap of deadlines stays bounded
        flight.pop(flight.add("cpu", [(0, 2)], allowance=1000.0, now=float(i)))
    assert len(flight._due) <= 2 * flight.all_tasks() + 1024
    assert flight.earliest_deadline() == 100.0 - 1989


# --- estimates, cut-off, timeouts, wedged pools ------------------------------------------------


def test_estimate_is_a_pessimistic_percentile():
    est = DurationEstimate()
    assert est.p90() is None and est.mean() is None
    for x in [1.0] * 9 + [10.0]:
        est.add(x)
    assert est.p90() == 10.0
    est.add(-1.0)  # clock skew: ignored
    assert est.count == 10


def test_cutoff_rules():
    estimates = Estimates()
    cut = Cutoff(end=1000.0, margin=100.0, estimates=estimates)
    assert cut.may_start_range("cpu", now=850.0)  # nothing observed yet: optimistic
    estimates.ranges("cpu").add(60.0)
    assert cut.may_start_range("cpu", now=840.0)
    assert not cut.may_start_range("cpu", now=841.0)
    assert cut.reached_at == 841.0
    assert cut.may_start_range("gpu", now=841.0)  # its own estimate
    assert cut.ranges_that_fit("cpu", now=720.0) == 3
    estimates.merges.add(30.0)
    assert cut.may_start_merge(now=870.0) and not cut.may_start_merge(now=871.0)
    assert not cut.must_leave(now=949.0) and cut.must_leave(now=950.0)
    unbounded = Cutoff(end=None, margin=100.0, estimates=estimates)
    assert unbounded.may_start_range("cpu", now=1e12) and not unbounded.must_leave(now=1e12)
    assert unbounded.ranges_that_fit("cpu", now=0.0) is None


def test_timeout_follows_observed_durations_within_floor_and_ceiling():
    estimates = Estimates()
    t = RangeTimeouts(TimeoutPolicy(factor=5, floor=10, ceiling=600), estimates)
    assert t.current("cpu") == 600  # nothing seen yet: the ceiling
    estimates.ranges("cpu").extend([1.0] * MIN_SAMPLES)
    assert t.current("cpu") == 10  # 5 x 1 s, raised to the floor
    estimates.ranges("cpu").extend([30.0] * 50)
    assert t.current("cpu") == 150
    estimates.ranges("cpu").extend([500.0] * 200)
    assert t.current("cpu") == 600  # capped
    assert t.current("gpu") == 600  # its own estimate
    # a bundle may take its ranges' expected time several times over, and queue once
    assert t.bundle_allowance("cpu", 1) == 2 * (5 * 500) + 600 / 2


def test_allowances_add_the_slack_for_a_busy_machine():
    estimates = Estimates()
    estimates.ranges("cpu").extend([0.1] * MIN_SAMPLES)
    estimates.merges.extend([0.1] * MIN_SAMPLES)
    default = RangeTimeouts(TimeoutPolicy(factor=5, floor=1, ceiling=3), estimates)
    quick = RangeTimeouts(TimeoutPolicy(factor=5, floor=1, ceiling=3, slack=2), estimates)
    # short ranges: the slack is most of the allowance
    assert default.bundle_allowance("cpu", 1) == 2 * 1 + 10
    assert quick.bundle_allowance("cpu", 1) == 2 * 1 + 2
    assert (default.merge_allowance(), quick.merge_allowance()) == (2 * 1 + 10, 2 * 1 + 2)


def test_a_pool_holding_tasks_without_results_is_wedged():
    watch = PoolWatch()
    idle = PoolInfo(pool="a", block="0", workers=4, tasks=0)
    busy = PoolInfo(pool="b", block="1", workers=4, tasks=2)
    watch.observe([idle, busy], now=0.0)
    watch.result_from("b", now=50.0)
    assert watch.wedged([idle, busy], quiet_for=100, now=120.0) == []
    assert watch.wedged([idle, busy], quiet_for=100, now=151.0) == [busy]
    # a pool that was idle until now has not been quiet for long
    idle_now_busy = PoolInfo(pool="a", block="0", workers=4, tasks=3)
    assert watch.wedged([idle_now_busy], quiet_for=100, now=151.0) == []
    inactive = PoolInfo(pool="b", block="1", workers=4, tasks=2, active=False)
    assert watch.wedged([inactive], quiet_for=100, now=500.0) == []


# --- how a run ended ------------------------------------------------------------------------


def _end(**changes) -> RunEnd:
    fields = dict(
        campaign_passed=False,
        no_space=None,
        stopped=False,
        out_of_time=False,
        allocation_end=None,
        events_left=10,
        fatal_ranges=[],
        failed_merges=0,
        validation_problems=["3 events missing"],
    )
    return RunEnd(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "status", "words"),
    [
        ({"campaign_passed": True, "stopped": True}, RunStatus.COMPLETE, "complete"),
        ({"no_space": "ledger", "stopped": True}, RunStatus.NO_SPACE, "disk is full"),
        ({"stopped": True, "out_of_time": True}, RunStatus.STOPPED, "stopped"),
        ({"out_of_time": True, "fatal_ranges": ["c-0-0"]}, RunStatus.WALLTIME, "10 events left"),
        ({"fatal_ranges": ["c-0-0"], "failed_merges": 2}, RunStatus.FAILED, "2 merge groups"),
        ({}, RunStatus.FAILED, "3 events missing"),
    ],
)
def test_run_status_precedence(changes, status, words):
    got, message = decide(_end(**changes))
    assert got is status
    assert words in message


def test_a_slower_node_type_gets_a_range_only_if_it_beats_the_backlog():
    from parsl_es.engine.sizing import worth_a_slower_node_type

    # a GPU build 10x faster (1 s a range on 10 GPUs) with 200 ranges to go: a CPU
    # range of 10 s finishes before the GPUs get through them (21 s)
    assert worth_a_slower_node_type(10.0, 1.0, backlog=200, faster_workers=10)
    # at the end of the step (20 ranges left), the GPUs finish them in 3 s: not the CPU
    assert not worth_a_slower_node_type(10.0, 1.0, backlog=20, faster_workers=10)
    # equally fast: always worth it while there is a backlog
    assert worth_a_slower_node_type(1.0, 1.0, backlog=1, faster_workers=100)


def test_node_types_are_compared_by_speed_only_once_each_has_enough_ranges():
    from parsl_es.engine.sizing import SPEED_SAMPLES, fastest_first

    enough = SPEED_SAMPLES
    # a GPU whose first two ranges carried its imports is not judged on them
    assert fastest_first(["cpu", "gpu"], {"cpu": (50, 0.1), "gpu": (2, 0.9)}) == (
        ["cpu", "gpu"],
        {},
    )
    assert fastest_first(["cpu", "gpu"], {"cpu": (enough, 0.4), "gpu": (enough, 0.1)}) == (
        ["gpu", "cpu"],
        {"cpu": 0.4, "gpu": 0.1},
    )
    assert fastest_first(["cpu"], {"cpu": (enough, 0.4)}) == (["cpu"], {})


def test_a_top_ups_bundles_shrink_with_what_is_left_and_fit_the_allocation():
    left = [100_000]
    sizes = bundle_sizer(0.01, workers=2, pools=1, prefetch=2.0, left=lambda: left[0])
    assert sizes() == 25  # far from the tail: 0.25 s of work
    left[0] = 12
    assert sizes() == 3  # the tail's share: 12 / (2 workers x 2)
    fitted = bundle_sizer(0.01, 2, 1, 2.0, lambda: 100_000, fit=4)
    assert fitted() == 4  # no more than still fits before the allocation ends


def test_a_top_up_starts_its_bound_or_as_many_ranges_as_came_back():
    """A wave of results is answered with as much new work: what waits for the workers
    stays level while the driver records (a fixed bound starved them)."""
    assert top_up_limit(0, least=20_000) == 20_000
    assert top_up_limit(19_999, least=20_000) == 20_000
    assert top_up_limit(194_000, least=20_000) == 194_000
