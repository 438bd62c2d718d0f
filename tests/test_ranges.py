"""Cutting campaigns into ranges and merge groups; seeds."""

from __future__ import annotations

import pytest

from parsl_es.ranges import MAX_SEED, RangePlan, event_seed, range_seed


def plan(**kw) -> RangePlan:
    args = {
        "campaign": "c",
        "events": 103,
        "first_event": 1000,
        "events_per_range": 5,
        "events_per_merge": 20,
        "seed": 42,
    }
    args.update(kw)
    return RangePlan(**args)


def test_ranges_cover_every_event_once_and_last_range_is_shorter():
    p = plan()
    events = [e for i in range(p.n_ranges) for e in p.range(i).event_numbers]
    assert events == list(range(1000, 1103))
    assert p.n_ranges == 21
    assert p.range(20).n_events == 3
    assert p.range(20).last_event == 1102


def test_merge_groups_partition_the_ranges_and_the_last_is_shorter():
    p = plan()
    assert p.n_merges == 6
    groups = [p.group(g) for g in range(p.n_merges)]
    assert [r for g in groups for r in g.range_indices] == list(range(p.n_ranges))
    assert groups[0].n_events == 20
    assert groups[-1].n_events == 3
    assert groups[-1].first_event == 1100
    assert all(p.group_of_range(r) == g.index for g in groups for r in g.range_indices)


def test_range_ids_and_seeds_are_stable():
    a, b = plan().range(3), plan().range(3)
    assert a == b
    assert a.id == "c-1015-1019"
    assert a.seed == range_seed(42, 1015)


def test_range_seed_depends_on_first_event_not_on_how_events_are_cut():
    assert plan(events_per_range=5).range(2).seed == range_seed(42, 1010)
    assert plan(events_per_range=10, events_per_merge=20).range(1).seed == range_seed(42, 1010)


def test_seeds_are_in_pythia_range_and_distinct():
    seeds = {event_seed(7, n) for n in range(20000)}
    assert len(seeds) == 20000
    assert min(seeds) >= 1 and max(seeds) <= MAX_SEED
    assert event_seed(7, 5) != event_seed(8, 5)
    assert range_seed(7, 5) != event_seed(7, 5)


@pytest.mark.parametrize(
    "kw",
    [{"events": 0}, {"events_per_range": 0}, {"events_per_merge": 7}, {"events_per_range": -1}],
)
def test_impossible_plans_are_refused(kw):
    with pytest.raises(ValueError):
        plan(**kw)


def test_range_index_out_of_bounds():
    with pytest.raises(IndexError):
        plan().range(21)
    with pytest.raises(IndexError):
        plan().group(6)
