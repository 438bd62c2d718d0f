"""``mode: service`` of the command payload: one long-lived transform per worker process.

The fast tests drive ``CommandPayload`` directly with a stand-in transform
(tests/transforms/fake_transform.py) that speaks the protocol and fails on
request; one integration test runs a whole campaign on a real HTEX.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from parsl_es import api, rootio
from parsl_es.failures import RangeTimeout, classify, range_deadline
from parsl_es.ledger import Ledger
from parsl_es.payloads import FatalPayloadError, PayloadError, make_payload
from parsl_es.payloads.base import TransformLost
from parsl_es.payloads.command import CommandParams, CommandPayload
from parsl_es.payloads.command.params import range_message
from parsl_es.payloads.command.process import InitDeaths
from parsl_es.payloads.command.service import ServiceStats
from parsl_es.ranges import EventRange
from parsl_es.states import FailureKind
from tests.helpers import assert_every_event_once
from tests.test_command_payload import SEED, engine_tmp_path, input_file, make_range, reading

FAKE = Path(__file__).parent / "transforms" / "fake_transform.py"
SIMULATE = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} --channel {{channel}}"


def service(tmp_path: Path, params: dict | None = None, **env) -> CommandPayload:
    starts = tmp_path / "starts"
    starts.mkdir(exist_ok=True)
    env = {"FAKE_TF_STARTS_DIR": str(starts), **{k: str(v) for k, v in env.items()}}
    fields = {"simulate": SIMULATE, "mode": "service", "env": env, **(params or {})}
    payload = make_payload("command", fields)
    assert isinstance(payload, CommandPayload)
    payload.setup()
    return payload


def run(payload: CommandPayload, tmp_path: Path, first: int, last: int) -> Path:
    r = make_range(first, last)
    output = engine_tmp_path(tmp_path / "ranges" / "group-000000", r)
    assert payload.simulate(r, output) == r.n_events
    assert list(payload.event_numbers(output)) == list(r.event_numbers)
    return output


@pytest.fixture
def payloads():
    """Every transform started by a test is ended when it ends (as a worker's exit would)."""
    made: list[CommandPayload] = []
    yield made
    for p in made:
        if p._transform is not None:
            p._transform.close()


def started(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "starts").iterdir())


# --- pure parts ------------------------------------------------------------------------------


def test_init_deaths_three_in_a_row() -> None:
    rule = InitDeaths()
    assert not rule.died() and not rule.died()
    rule.ready()  # a transform that got as far as asking for events resets the count
    assert not rule.died() and not rule.died()
    assert rule.died()


def test_transform_lost_is_infrastructure() -> None:
    assert classify(TransformLost("gone")) is FailureKind.INFRASTRUCTURE
    assert classify(PayloadError("x")) is FailureKind.PAYLOAD


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("tf --channel {channel} --first {first_event}", r"\{first_event\}.*is per range"),
        ("tf --channel {channel} --out {output} --seed {seed}", r"\{output\}, \{seed\}"),
        ("tf {channel} {campaign_seed} {range_id}", r"\{range_id\}"),
    ],
)
def test_service_refuses_per_range_placeholders(template: str, expected: str) -> None:
    with pytest.raises(ValidationError, match=expected):
        CommandParams(simulate=template, mode="service")


def test_channel_needs_service_mode() -> None:
    with pytest.raises(ValidationError, match=r"\{channel\}.*needs mode: service"):
        CommandParams(simulate="tf --channel {channel} {output}")
    CommandParams(simulate="tf --channel {channel} --in {input}", input="/e", mode="service")
    assert CommandParams(simulate="tf {output}").mode == "per_range"


def test_range_message_with_an_input_file() -> None:
    params = CommandParams(
        simulate="tf {channel}", mode="service", input="/d/EVNT.root", input_first_event=100
    )
    m = range_message(params, make_range(105, 109))
    assert (m.range_id, m.first_event, m.last_event) == ("c-105-109", 105, 109)
    assert (m.pfn, m.lfn, m.start_event, m.last_event_in_file) == (
        "/d/EVNT.root",
        "EVNT.root",
        6,
        10,
    )
    plain = range_message(CommandParams(simulate="tf {channel}", mode="service"), make_range(0, 1))
    assert plain.pfn is None and plain.start_event is None and plain.seed == make_range(0, 1).seed


def test_range_message_from_the_ranges_own_input() -> None:
    """PFN is the range's file; startEvent, lastEvent: skip + 1, skip + n (1-based, inclusive)."""
    params = CommandParams(simulate="tf {channel}", mode="service")
    m = range_message(params, reading(make_range(1020, 1029), "/m/EVNT.merge-000001.root", 20))
    assert (m.first_event, m.last_event) == (1020, 1029)
    assert (m.pfn, m.lfn, m.start_event, m.last_event_in_file) == (
        "/m/EVNT.merge-000001.root",
        "EVNT.merge-000001.root",
        21,
        30,
    )
    both = CommandParams(simulate="tf {channel}", mode="service", input="/d/EVNT.root")
    with pytest.raises(FatalPayloadError, match=r"/m/E\.root.*input /d/EVNT\.root"):
        range_message(both, reading(make_range(0, 1), "/m/E.root", 0))


# --- a real transform ----------------------------------------------------------------------


def test_one_transform_serves_many_ranges(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, FAKE_TF_READY_N=3)
    payloads.append(payload)
    for first in range(0, 12, 3):
        run(payload, tmp_path, first, first + 2)
    stats = payload.service_stats()
    assert stats.starts == 1 and stats.restarts == 0 and stats.init_seconds > 0
    [start] = started(tmp_path)
    assert start.name.startswith(f"{os.getpid()}-")  # a child of this (worker) process
    arg, env = start.read_text().split()
    assert arg == env and len(arg) < 100  # {channel} and PARSL_ES_CHANNEL: the socket
    assert not os.path.exists(arg)  # removed once the transform connected
    # the transform's log and work directory beside the campaign's logs, not among ranges
    assert list((tmp_path / "logs" / "service").glob("transform-*.log"))
    group = tmp_path / "ranges" / "group-000000"
    assert len(list(group.glob("*.root"))) == 4 and len(list(group.iterdir())) == 4
    transform = payload._transform
    pid = transform.pid
    transform.close()  # as the worker's exit does: No more events, then gone
    assert "no more events" in transform.log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.integration  # starts real transforms for seconds
def test_killed_transform_loses_the_range_and_is_restarted(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, FAKE_TF_FAULT_EVENT=2, FAKE_TF_FAULT="kill")
    payloads.append(payload)
    run(payload, tmp_path, 0, 1)
    r = make_range(2, 3)
    output = engine_tmp_path(tmp_path, r)
    with pytest.raises(TransformLost, match="while holding the range"):
        payload.simulate(r, output)
    assert not output.exists()
    run(payload, tmp_path, 4, 5)
    assert payload.service_stats().starts == 2 and payload.service_stats().restarts == 1
    assert len(started(tmp_path)) == 2
    # what the engine records: both starts, once, the second marked as a restart
    starts = payload.take_transform_starts()
    assert [s.restart for s in starts] == [False, True]
    assert all(s.init_seconds is not None and s.init_seconds > 0 for s in starts)
    assert starts[0].started < starts[1].started
    assert payload.take_transform_starts() == []


@pytest.mark.integration  # starts real transforms for seconds
def test_transform_gone_between_ranges_costs_no_range(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, FAKE_TF_FAULT_EVENT=0, FAKE_TF_FAULT="quit")
    payloads.append(payload)
    run(payload, tmp_path, 0, 1)  # reported done, then exits without asking for more
    run(payload, tmp_path, 2, 3)  # held no range: simply started again
    assert payload.service_stats().starts == 2 and payload.service_stats().restarts == 1


@pytest.mark.integration  # starts real transforms for seconds
def test_hung_transform_times_out_and_is_killed(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, FAKE_TF_FAULT_EVENT=2, FAKE_TF_FAULT="hang")
    payloads.append(payload)
    run(payload, tmp_path, 0, 1)
    pid = payload._transform.pid
    r = make_range(2, 3)
    with pytest.raises(RangeTimeout), range_deadline(1.5):
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed, not left hanging
    run(payload, tmp_path, 4, 5)
    assert payload.service_stats().starts == 2


@pytest.mark.parametrize(
    ("fault", "error", "message", "starts"),
    [
        ("garbage", PayloadError, "not a message of the protocol", 2),
        ("unknown", PayloadError, "'not-my-range', which it was not given", 2),
        ("err", PayloadError, "the transform failed it: G4Exception bad", 1),
        ("fatal", FatalPayloadError, "the transform failed it: G4Exception bad", 1),
        ("nofile", PayloadError, "missing.root, which is not there", 1),
    ],
)
def test_faulty_reports(tmp_path: Path, payloads, fault, error, message, starts) -> None:
    """Garbage and a stranger's range kill the transform; a failure it reports does not."""
    payload = service(tmp_path, FAKE_TF_FAULT_EVENT=0, FAKE_TF_FAULT=fault)
    payloads.append(payload)
    r = make_range(0, 1)
    with pytest.raises(error, match=message) as info:
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    assert type(info.value) in (PayloadError, FatalPayloadError)  # never "lost": it answered
    assert not engine_tmp_path(tmp_path, r).exists()
    run(payload, tmp_path, 2, 3)
    assert payload.service_stats().starts == starts


def test_init_crash_loop_is_fatal_with_the_log_tail(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, FAKE_TF_INIT_CRASH=1)
    payloads.append(payload)
    r = make_range(0, 1)
    with pytest.raises(FatalPayloadError, match="3 times in a row") as info:
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    assert "marker-5678" in str(info.value)
    assert payload.service_stats() == ServiceStats(starts=3, restarts=2, init_seconds=0.0)
    # the worker's transform is broken for good: no more crash loops for later ranges
    with pytest.raises(FatalPayloadError, match="3 times in a row"):
        payload.simulate(make_range(2, 3), tmp_path / "o.root")
    assert len(started(tmp_path)) == 3


@pytest.mark.integration  # starts real transforms for seconds
def test_initialisation_outlives_a_range_deadline(tmp_path: Path, payloads) -> None:
    """Ranges of seconds give a timeout of a minute; transforms initialise for minutes."""
    payload = service(tmp_path, FAKE_TF_INIT_SECONDS=2)
    payloads.append(payload)
    r = make_range(0, 1)
    with pytest.raises(RangeTimeout), range_deadline(0.5):
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    pid = payload._transform.pid
    os.kill(pid, 0)  # still initialising, not killed
    run(payload, tmp_path, 2, 3)
    assert payload._transform.pid == pid and payload.service_stats().starts == 1


@pytest.mark.integration  # starts real transforms for seconds
def test_initialisation_past_its_limit_is_an_init_death(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, {"init_timeout_seconds": 0.3}, FAKE_TF_INIT_SECONDS=60)
    payloads.append(payload)
    r = make_range(0, 1)
    with pytest.raises(FatalPayloadError, match=r"did not ask for events within 0\.3 s"):
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    assert payload.service_stats().starts == 3 and payload._transform.running is False


def test_executable_that_cannot_run_is_fatal(tmp_path: Path, payloads) -> None:
    script = tmp_path / "not_executable_tf"
    script.write_text("#!/bin/sh\n")  # no x bit: found by name, but cannot be run
    payload = make_payload(
        "command", {"simulate": f"{script} --channel {{channel}}", "mode": "service"}
    )
    payloads.append(payload)
    with pytest.raises(FatalPayloadError, match="not_executable_tf"):
        payload.simulate(make_range(0, 1), tmp_path / "o.root")
    assert payload.service_stats().starts == 0


WORKER = """
import os, signal, sys
from pathlib import Path
from parsl_es.payloads import make_payload
from tests.test_command_payload import make_range
p = make_payload("command", {"simulate": sys.argv[1], "mode": "service"})
r = make_range(0, 1)
assert p.simulate(r, Path(sys.argv[2])) == 2
print(p._transform.pid, p._transform.log, flush=True)
if sys.argv[3] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.integration  # starts real transforms for seconds
@pytest.mark.parametrize("end", ["exits", "killed"])
def test_transform_never_outlives_its_worker(tmp_path: Path, end: str) -> None:
    """A worker leaving says No more events; a worker killed takes its transform along."""
    done = subprocess.run(
        [sys.executable, "-c", WORKER, SIMULATE, str(tmp_path / "o.root"), end],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == (0 if end == "exits" else -signal.SIGKILL), done.stderr
    pid, log = done.stdout.split()
    deadline = time.monotonic() + 10
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(int(pid))
    assert ("no more events" in Path(log).read_text()) == (end == "exits")


def test_per_range_output_placeholders_unchanged() -> None:
    """mode: per_range stays the default and keeps every placeholder."""
    params = CommandParams(simulate="tf {output} {first_event} {seed} {campaign_seed}")
    assert params.mode == "per_range"


# --- a whole campaign ----------------------------------------------------------------------


@pytest.mark.integration
def test_campaign_in_service_mode(local_session, tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    starts.mkdir()
    campaign = {
        "name": "svc",
        "events": 40,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 7,
        "payload": {
            "name": "command",
            "mode": "service",
            "simulate": SIMULATE,
            "env": {"FAKE_TF_STARTS_DIR": str(starts)},
        },
    }
    result = api.run_campaign(campaign, tmp_path / "out", session=local_session)
    assert result.status == "complete", result.message
    assert result.failures == 0
    assert_every_event_once(tmp_path / "out", 0, 40)
    workers = [p.name.split("-")[0] for p in starts.iterdir()]
    assert workers and len(workers) == len(set(workers)), "a worker started its transform twice"
    # the ledger holds each start, where it ran, with its initialisation time
    with Ledger.open(tmp_path / "out" / "ledger.sqlite", readonly=True) as led:
        recorded = led.transform_starts()
        per_worker = led.summary().transforms
    assert len(recorded) == len(workers) and not any(r.restart for r in recorded)
    assert all(r.init_seconds is not None for r in recorded)
    assert sum(row["starts"] for row in per_worker.values()) == len(workers)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        ({"FAKE_TF_FAULT": "kill"}, "lost"),
        ({"FAKE_TF_FAULT": "hang"}, "timeout"),
        ({"FAKE_TF_FAULT": "garbage"}, "failed"),
        ({"FAKE_TF_FAULT": "unknown"}, "failed"),
        ({"FAKE_TF_INIT_CRASH": "1"}, None),  # it held no range yet: started again
    ],
    ids=["killed", "hung", "garbage", "unknown-range", "init-crash"],
)
def test_every_fault_leaves_every_event_exactly_once(local_session, tmp_path, fault, outcome):
    """Each fault once, in a real campaign: the range it hit is redone, nothing doubled."""
    env = {"FAKE_TF_FAULT_EVENT": "6", "FAKE_TF_ONCE": str(tmp_path / "once"), **fault}
    campaign = {
        "name": "svcfault",
        "events": 20,
        "events_per_range": 2,
        "events_per_merge": 10,
        "seed": 9,
        "attempts": 2,
        "range_timeout": {"floor_seconds": 1, "ceiling_seconds": 3, "slack_seconds": 5},
        "payload": {"name": "command", "mode": "service", "simulate": SIMULATE, "env": env},
    }
    out = tmp_path / "out"
    result = api.run_campaign(campaign, out, session=local_session)
    assert result.status == "complete", result.message
    assert_every_event_once(out, 0, 20)
    with Ledger.open(out / "ledger.sqlite", readonly=True) as led:
        outcomes = [a.outcome.value for a in led.attempts()]
        restarts = sum(row["restarts"] for row in led.summary().transforms.values())
    if outcome is None:
        assert outcomes == [] and restarts == 1, (outcomes, restarts)
    else:  # the range the fault hit failed once, as the fault's kind; nothing else did
        assert outcomes and set(outcomes) == {outcome}, outcomes


@pytest.mark.integration
def test_the_reference_transform_runs_a_campaign_with_the_in_process_events(
    local_session, tmp_path
):
    """The physics CLI's service mode through the real protocol: Pythia initialised once
    per worker, the campaign's events identical to the in-process physics payload's."""
    simulate = (
        f"{shlex.quote(sys.executable)} -m parsl_es.payloads.physics service --process minbias "
        "--campaign-seed {campaign_seed} --channel {channel}"
    )
    service = {
        "name": "refsvc",
        "events": 12,
        "events_per_range": 2,
        "events_per_merge": 6,
        "seed": 31,
        "payload": {"name": "command", "mode": "service", "simulate": simulate},
    }
    done = api.run_campaign(service, tmp_path / "svc", session=local_session)
    assert done.status == "complete", done.message
    assert_every_event_once(tmp_path / "svc", 0, 12)
    # the same events, simulated here by the in-process physics payload and merged alike
    physics = make_payload("physics", {"process": "minbias"})
    physics.setup()
    merged = sorted((tmp_path / "svc" / "merged").iterdir())
    for g, path in enumerate(merged):
        parts = []
        for first in range(6 * g, 6 * g + 6, 2):
            r = EventRange("refsvc", first // 2, first, first + 1, g, 31)
            parts.append(tmp_path / f"ref-{first}.root")
            physics.simulate(r, parts[-1])
        physics.merge(parts, tmp_path / f"ref-merged-{g}.root")
        assert physics.content_hash(path) == physics.content_hash(tmp_path / f"ref-merged-{g}.root")
    with Ledger.open(tmp_path / "svc" / "ledger.sqlite", readonly=True) as led:
        per_worker = led.summary().transforms
    assert per_worker and all(row["starts"] == 1 for row in per_worker.values())


@pytest.mark.integration  # starts real transforms for seconds
def test_a_range_of_another_campaign_seed_gets_a_transform_of_its_own(tmp_path, payloads):
    """A transform started with ``{campaign_seed}`` serves that campaign seed only."""
    payload = service(tmp_path, {"simulate": SIMULATE + " --seed-arg {campaign_seed}"})
    payloads.append(payload)
    run(payload, tmp_path, 0, 1)
    first = payload._transform
    other = dataclasses.replace(make_range(2, 3), campaign_seed=SEED + 1)
    output = engine_tmp_path(tmp_path / "ranges" / "group-000000", other)
    assert payload.simulate(other, output) == 2
    assert payload._transform is not first and not first.running
    starts = payload.take_transform_starts()
    assert len(starts) == 2 and not any(s.restart for s in starts)
    argvs = [p.read_text() for p in sorted((tmp_path / "starts").iterdir())]
    assert len(argvs) == 2


@pytest.mark.integration  # starts real transforms for seconds
def test_ranges_read_from_their_input_files(tmp_path: Path, payloads) -> None:
    """A transform reading PFN serves ranges of any file; one started with a file on its
    command line ({input}) serves that file's ranges only, and another file starts another."""
    file0 = input_file(tmp_path / "gen.merge-000000.root", 100, 119)
    file1 = input_file(tmp_path / "gen.merge-000001.root", 120, 139)
    ranges = [
        reading(make_range(100, 104), file0, 0),
        reading(make_range(110, 119), file0, 10),
        reading(make_range(120, 124), file1, 0),
        reading(make_range(130, 134), file1, 10),
    ]
    for template, starts in [(SIMULATE, 1), (SIMULATE + " --input {input}", 2)]:
        here = tmp_path / f"starts-{starts}"
        here.mkdir()
        payload = service(here, {"simulate": template})
        payloads.append(payload)
        for r in ranges:
            output = engine_tmp_path(here / "ranges" / "group-000000", r)
            assert payload.simulate(r, output) == r.n_events
            events = rootio.read_events(output)
            assert list(events["event_number"]) == list(r.event_numbers)
            assert list(events["x"]) == [n * 10 + 7 for n in r.event_numbers]
        assert payload.service_stats().starts == 1  # of the transform running now
        inputs = [path.read_text().split("\n")[2] for path in started(here)]
        assert sorted(inputs) == ([""] if starts == 1 else [str(file0), str(file1)])


def test_input_placeholder_without_any_input_starts_no_transform(tmp_path: Path, payloads) -> None:
    payload = service(tmp_path, {"simulate": SIMULATE + " --input {input}"})
    payloads.append(payload)
    r = make_range(0, 1)
    with pytest.raises(FatalPayloadError, match=r"uses \{input\} but range c-0-1 has no input"):
        payload.simulate(r, engine_tmp_path(tmp_path, r))
    assert started(tmp_path) == [] and payload._transform is None
