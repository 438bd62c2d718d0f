"""The campaign's rank test has the power to reject a miscalibrated GPU build, or says it has not.

No Parsl: the merged files of a tiny campaign are written by the physics payload
directly (a merged file is its group's events in order), then validated as the
workers would, file by file and for the campaign.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from parsl_es import fileio
from parsl_es.payloads import make_payload
from parsl_es.ranges import EventRange, RangePlan
from parsl_es.records import MergedFile, MergeRecord
from parsl_es.states import MergeState
from parsl_es.validation import (
    RANK_TEST_EVENTS_MIN,
    RANK_TEST_P_MIN,
    rank_test_p_value,
    validate_campaign_outputs,
    validate_merged_file,
)

SEED = 42
GPU_BUILD = {"process": "minbias", "array_library": "torch", "device": "cpu"}


def write_campaign(out: Path, events: int, per_merge: int, **params) -> RangePlan:
    """The merged files of a finished campaign, built with ``params`` (torch's CPU build)."""
    build = {**GPU_BUILD, **params}
    if build["array_library"] == "torch":  # only these need it: the rest run without
        pytest.importorskip("torch", reason="torch is in the test extra: pip install -e '.[test]'")
    plan = RangePlan("tiny", events, 0, per_merge, per_merge, SEED)
    payload = make_payload("physics", build)
    payload.setup()
    (out / "merged").mkdir(parents=True)
    for g in range(plan.n_merges):
        group = plan.group(g)
        r = EventRange("tiny", g, group.first_event, group.last_event, g, SEED)
        assert payload.simulate(r, out / "merged" / f"merged-{g:06d}.root") == group.n_events
    return plan


def validate(out: Path, plan: RangePlan, process: str = "minbias", **params) -> dict:
    """Validation as the campaign runs it, with the payload as the campaign file sets it."""
    payload = make_payload("physics", {"process": process, **params})
    files = sorted((out / "merged").iterdir())
    assert len(files) == plan.n_merges
    merges = []
    for g, path in enumerate(files):
        group = plan.group(g)
        rel, checksum = str(path.relative_to(out)), fileio.adler32(path)
        merged = MergedFile(
            group=g,
            attempt=1,
            output=rel,
            size=path.stat().st_size,
            checksum=checksum,
            n_events=group.n_events,
            started=0.0,
            finished=0.0,
        )
        validate_merged_file(payload, group, out, merged)
        merges.append(
            MergeRecord(
                group=g,
                first_range=group.first_range,
                last_range=group.last_range,
                first_event=group.first_event,
                last_event=group.last_event,
                state=MergeState.DONE,
                output=rel,
                checksum=checksum,
            )
        )
    return validate_campaign_outputs(payload, plan, out, merges, with_plots=False)


@pytest.fixture(scope="module")
def three_groups(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RangePlan]:
    """12 events in three merged files: 2 events sampled per file, 6 in all."""
    out = tmp_path_factory.mktemp("power") / "out"
    return out, write_campaign(out, 12, 4)


def fresh(src: tuple[Path, RangePlan], tmp_path: Path) -> tuple[Path, RangePlan]:
    out = tmp_path / "out"
    shutil.copytree(src[0] / "merged", out / "merged")
    return out, src[1]


def test_rank_test_needs_seven_events_to_reject_at_all():
    assert RANK_TEST_EVENTS_MIN == 7
    assert rank_test_p_value([7, 0, 0]) < RANK_TEST_P_MIN <= rank_test_p_value([6, 0, 0])


def test_miscalibrated_gpu_build_in_a_tiny_campaign_is_rejected(three_groups, tmp_path):
    """Against a reference with 4x coarser shower quanta, the torch build is miscalibrated."""
    out, plan = fresh(three_groups, tmp_path)
    report = validate(out, plan, calo_quantum_gev=0.2)
    check = report["event_check"]
    assert check["statistical_checked"] >= RANK_TEST_EVENTS_MIN, check
    assert check["power"] == "sufficient" and check["topped_up_groups"]
    assert not report["passed"], report
    assert any("disagree in distribution" in p for p in report["problems"]), report["problems"]


def test_correct_gpu_build_in_a_tiny_campaign_passes(three_groups, tmp_path):
    out, plan = fresh(three_groups, tmp_path)
    report = validate(out, plan)
    check = report["event_check"]
    assert report["passed"], report["problems"]
    assert check["statistical_checked"] >= RANK_TEST_EVENTS_MIN and check["power"] == "sufficient"
    assert check["builds"] == {"torch-cpu": check["statistical_checked"]}
    assert all(p >= RANK_TEST_P_MIN for p in check["rank_p_values"].values())
    assert report["warnings"] == []


def test_too_small_campaign_says_its_rank_test_has_no_power(tmp_path):
    out = tmp_path / "out"
    plan = write_campaign(out, 5, 5)
    report = validate(out, plan, calo_quantum_gev=0.2)  # miscalibrated, yet cannot be caught
    check = report["event_check"]
    assert check["statistical_checked"] == 5  # every event of the campaign re-derived
    assert check["power"] == "insufficient"
    assert "needs at least 7" in check["power_reason"]
    assert report["warnings"] == [check["power_reason"]]


def test_reproducible_build_needs_no_rank_test(tmp_path):
    out = tmp_path / "out"
    plan = write_campaign(out, 8, 4, array_library="numpy")
    report = validate(out, plan)
    check = report["event_check"]
    assert report["passed"] and check["power"] == "not needed" and not check["topped_up_groups"]
    assert check["exact_checked"] == 4 and check["statistical_checked"] == 0  # 2 per file


def test_rank_test_p_value():
    assert rank_test_p_value([0, 0, 0]) == 1.0
    assert rank_test_p_value([10, 10, 10]) == 1.0
    assert rank_test_p_value([30, 0, 0]) < 1e-12
    assert 0.05 < rank_test_p_value([12, 9, 9]) < 1.0
