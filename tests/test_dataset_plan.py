"""Cutting an input dataset into ranges and merge groups (parsl_es.dataset_plan)."""

from __future__ import annotations

import random
import time
from itertools import pairwise

import pytest

from parsl_es.dataset_plan import DatasetPlan, InputFile
from parsl_es.ranges import RangePlan, range_seed


def files_of(sizes: list[int]) -> tuple[InputFile, ...]:
    return tuple(
        InputFile(f"/data/f{i}.hepmc", 100 * n, f"{i:08x}", n) for i, n in enumerate(sizes)
    )


def plan_of(sizes: list[int], epr: int = 5, epm: int = 20, **kw) -> DatasetPlan:
    args = {"campaign": "c", "events_per_range": epr, "events_per_merge": epm, "seed": 42}
    args.update(kw)
    return DatasetPlan(files=files_of(sizes), **args)


def check_plan(p: DatasetPlan) -> None:
    """Every rule of the plan, range by range and group by group."""
    starts = [0]
    for f in p.files:
        starts.append(starts[-1] + f.n_events)
    file_at = {f.path: k for k, f in enumerate(p.files)}
    assert p.events == starts[-1] and p.first_event == 0 and p.last_event == starts[-1] - 1

    ranges = [p.range(i) for i in range(p.n_ranges)]
    # ranges cover every position once, in order
    assert [e for r in ranges for e in r.event_numbers] == list(range(p.events))
    for r in ranges:
        k = file_at[r.input]
        # within one file, skip is the position inside it, never short except at its end
        assert starts[k] <= r.first_event <= r.last_event < starts[k + 1]
        assert r.skip == r.first_event - starts[k]
        assert r.skip % p.events_per_range == 0
        if r.last_event != starts[k + 1] - 1:
            assert r.n_events == p.events_per_range
        assert r.n_events <= p.events_per_range
        assert r.id == f"c-{r.first_event}-{r.last_event}"
        assert r.merge_group == p.group_of_range(r.index)

    groups = [p.group(g) for g in range(p.n_merges)]
    assert [i for g in groups for i in g.range_indices] == list(range(p.n_ranges))
    for g in groups:
        members = [ranges[i] for i in g.range_indices]
        # the group's ranges are contiguous and cover it exactly, within one file
        assert members[0].first_event == g.first_event
        assert members[-1].last_event == g.last_event
        assert all(a.last_event + 1 == b.first_event for a, b in pairwise(members))
        assert {r.input for r in members} == {p.file_of_group(g.index).path}
        assert all(r.merge_group == g.index for r in members)
        k = file_at[p.file_of_group(g.index).path]
        assert (g.first_event - starts[k]) % p.events_per_merge == 0
        assert g.n_events <= p.events_per_merge
        if g.last_event != starts[k + 1] - 1:
            assert g.n_events == p.events_per_merge

    rows = p.rows(list(range(p.n_ranges)))
    assert rows == [(r.index, r.id, r.first_event, r.last_event, r.merge_group) for r in ranges]


def test_a_small_dataset_by_hand():
    p = plan_of([7, 3, 10], epr=2, epm=4)
    assert (p.n_ranges, p.n_merges, p.events) == (11, 6, 20)
    r3, r4 = p.range(3), p.range(4)
    assert (r3.input, r3.skip, r3.first_event, r3.last_event) == ("/data/f0.hepmc", 6, 6, 6)
    assert (r4.input, r4.skip, r4.first_event, r4.last_event) == ("/data/f1.hepmc", 0, 7, 8)
    g1 = p.group(1)
    assert (g1.first_range, g1.last_range, g1.first_event, g1.last_event) == (2, 3, 4, 6)
    assert p.file_of_group(2).path == "/data/f1.hepmc"
    check_plan(p)


def test_every_range_within_one_file_and_last_ranges_short():
    p = plan_of([12, 1, 5, 10, 3], epr=5, epm=10)
    check_plan(p)
    assert [p.range(i).n_events for i in range(p.n_ranges)] == [5, 5, 2, 1, 5, 5, 5, 3]


def test_groups_never_span_files_and_last_groups_short():
    p = plan_of([25, 4, 20], epr=5, epm=10)
    check_plan(p)
    assert [p.group(g).n_events for g in range(p.n_merges)] == [10, 10, 5, 4, 10, 10]
    assert [p.file_of_group(g).path[-8:] for g in range(p.n_merges)] == [
        "f0.hepmc", "f0.hepmc", "f0.hepmc", "f1.hepmc", "f2.hepmc", "f2.hepmc"
    ]  # fmt: skip


def test_seeds_and_ids_come_from_positions_like_a_range_plan():
    p = plan_of([7, 3], epr=2, epm=4)
    r = p.range(4)
    assert r.id == "c-7-8"
    assert r.seed == range_seed(42, 7)
    assert p.range(4) == plan_of([7, 3], epr=2, epm=4).range(4)


def test_many_random_file_size_lists():
    rng = random.Random(13)
    for _ in range(300):
        sizes = [rng.choice([1, 2, 3, rng.randint(1, 60)]) for _ in range(rng.randint(1, 12))]
        epr = rng.randint(1, 7)
        p = plan_of(sizes, epr=epr, epm=epr * rng.randint(1, 5))
        check_plan(p)


def test_rows_of_any_index_order_equal_range():
    p = plan_of([9, 2, 30, 1, 17], epr=4, epm=8)
    indices = list(range(p.n_ranges))
    random.Random(1).shuffle(indices)
    expected = [(r.index, r.id, r.first_event, r.last_event, r.merge_group)
                for r in map(p.range, indices)]  # fmt: skip
    assert p.rows(indices) == expected
    assert p.rows([]) == []


def test_out_of_bounds_indices_are_refused():
    p = plan_of([3, 3], epr=2, epm=2)
    for bad in (-1, p.n_ranges):
        with pytest.raises(IndexError):
            p.range(bad)
        with pytest.raises(IndexError):
            p.rows([0, bad])
        with pytest.raises(IndexError):
            p.group_of_range(bad)
    for bad in (-1, p.n_merges):
        with pytest.raises(IndexError):
            p.group(bad)
        with pytest.raises(IndexError):
            p.file_of_group(bad)


@pytest.mark.parametrize(
    ("sizes", "epr", "epm"),
    [([5], 0, 5), ([5], 2, 5), ([5], 5, 0), ([], 1, 1), ([3, 0], 1, 1)],
)
def test_bad_plans_are_refused(sizes, epr, epm):
    with pytest.raises(ValueError):
        plan_of(sizes, epr=epr, epm=epm)


def test_the_same_file_twice_is_refused():
    f = files_of([3])[0]
    with pytest.raises(ValueError, match="twice"):
        DatasetPlan("c", (f, f), 1, 1, 0)


def test_a_plan_has_no_uniform_ranges_per_merge():
    assert not hasattr(plan_of([3]), "ranges_per_merge")


def test_json_round_trip_and_refusals():
    p = plan_of([7, 3, 10], epr=2, epm=4)
    q = DatasetPlan.from_json(p.to_json())
    assert q == p
    assert q.rows(list(range(q.n_ranges))) == p.rows(list(range(p.n_ranges)))
    for bad in ("{", "[]", '{"kind": "dataset-plan", "version": 1}', '{"kind": "x"}'):
        with pytest.raises(ValueError):
            DatasetPlan.from_json(bad)


def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_a_ten_thousand_file_plan_is_cheap():
    rng = random.Random(5)
    sizes = [rng.randint(1, 1000) for _ in range(10_000)]
    t0 = time.perf_counter()
    p = plan_of(sizes, epr=100, epm=1000)
    built = time.perf_counter() - t0
    indices = list(range(p.n_ranges))
    rows = p.rows(indices)
    assert len(rows) == p.n_ranges > 50_000
    assert rows[-1][3] == p.last_event == sum(sizes) - 1
    # rows() costs about what RangePlan.rows costs for as many ranges (a bisection
    # per file crossed), and a lookup is O(log files): generous bounds, 2 shared cores
    flat = RangePlan("c", p.n_ranges * 100, 0, 100, 1000, 42)
    ours = best_of(2, lambda: p.rows(indices))
    theirs = best_of(2, lambda: flat.rows(indices))
    assert ours < 2.5 * theirs + 0.05, (ours, theirs)
    lookups = best_of(1, lambda: [p.group_of_range(i) for i in range(0, p.n_ranges, 5)])
    assert built < 0.5 and lookups < 0.5, (built, lookups)
    # what the ledger records stays small: the files, no per-range object
    text = p.to_json()
    assert len(text) < 200 * len(sizes)
    assert DatasetPlan.from_json(text) == p
