"""The event-service protocol's messages, both ways (pure: no transform, no socket)."""

from __future__ import annotations

import json

import pytest

from parsl_es.event_service import (
    NO_MORE,
    ProtocolError,
    RangeDone,
    RangeFailed,
    RangeMessage,
    Ready,
    done_line,
    failed_line,
    parse_transform_line,
    parse_worker_line,
    ranges_line,
    ready_line,
)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Ready for events\n", Ready(1)),
        ("Ready for events 4", Ready(4)),
        (
            "/scratch/out/EVNT.pool.root,ID:c-0-9,CPU:12.5,WALL:13.0",
            RangeDone("c-0-9", "/scratch/out/EVNT.pool.root", 12.5, 13.0),
        ),
        (
            "/dir with, comma/out.root,ID:c-10-19,CPU:1,WALL:2",
            RangeDone("c-10-19", "/dir with, comma/out.root", 1.0, 2.0),
        ),
        (
            "ERR_ATHENAMP_PROCESS c-0-9: Geant4 exception: G4Exception",
            RangeFailed("c-0-9", "Geant4 exception: G4Exception", fatal=False),
        ),
        (
            "ERR_TE_FATAL c-0-9: input file corrupt",
            RangeFailed("c-0-9", "input file corrupt", True),
        ),
    ],
    ids=["ready", "ready-n", "done", "done-comma-in-path", "error", "fatal"],
)
def test_transform_lines(line, message):
    assert parse_transform_line(line) == message


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "Ready for events 0",
        "Ready for events -1",
        "Ready for events many",
        "out.root,ID:c-0-9,CPU:x,WALL:1",
        "out.root,ID:c-0-9,CPU:nan,WALL:1",
        "out.root,ID:c-0-9,CPU:-1,WALL:1",
        "out.root,ID:c-0-9",
        "x" * 70000,
    ],
    ids=[
        "empty",
        "garbage",
        "zero",
        "negative",
        "word",
        "cpu-word",
        "nan",
        "neg-cpu",
        "no-times",
        "huge",
    ],
)
def test_garbage_is_a_protocol_error(line):
    with pytest.raises(ProtocolError):
        parse_transform_line(line)


def test_lines_the_transform_side_writes_parse_back():
    assert parse_transform_line(ready_line()) == Ready(1)
    assert parse_transform_line(ready_line(3)) == Ready(3)
    assert parse_transform_line(done_line("r-1-2", "/o.root", 0.5, 0.75)) == RangeDone(
        "r-1-2", "/o.root", 0.5, 0.75
    )
    assert parse_transform_line(failed_line("r-1-2", "two\nlines", fatal=True)) == RangeFailed(
        "r-1-2", "two lines", fatal=True
    )


def test_ranges_travel_as_panda_names_them():
    r = RangeMessage(
        "c-100-109",
        100,
        109,
        42,
        pfn="/d/EVNT.root",
        lfn="EVNT.root",
        guid="ab-12",
        start_event=1,
        last_event_in_file=10,
    )
    line = ranges_line([r, RangeMessage("c-110-119", 110, 119, 43)])
    assert "\n" not in line
    items = json.loads(line)
    assert items[0] == {
        "eventRangeID": "c-100-109",
        "firstEventNumber": 100,
        "lastEventNumber": 109,
        "seed": 42,
        "PFN": "/d/EVNT.root",
        "LFN": "EVNT.root",
        "GUID": "ab-12",
        "startEvent": 1,
        "lastEvent": 10,
    }
    assert items[1]["PFN"] is None and items[1]["startEvent"] is None
    assert parse_worker_line(line) == [r, RangeMessage("c-110-119", 110, 119, 43)]
    assert parse_worker_line(NO_MORE + "\n") is None


@pytest.mark.parametrize("line", ["[]", "{}", "nonsense", '[{"eventRangeID": "x"}]'])
def test_bad_worker_lines_are_protocol_errors(line):
    with pytest.raises(ProtocolError):
        parse_worker_line(line)
