"""The physics CLI's ``service`` subcommand: the reference transform of service mode.

A tiny worker in the test (a Unix socket server speaking ``protocol``) starts the
transform as a subprocess and serves it ranges; no Parsl, so the fast tier.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from parsl_es import event_service as protocol
from parsl_es import rootio
from parsl_es.payloads.physics import PhysicsPayload
from parsl_es.ranges import EventRange, range_seed

SEED = 3
TIMEOUT = 120.0  # a loaded CI machine: Pythia's initialisation alone takes seconds


class Worker:
    """The worker's end: listens, accepts the transform, one protocol line at a time."""

    def __init__(self, directory: Path) -> None:
        self.path = str(directory / "ch")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(1)
        self._server.settimeout(TIMEOUT)
        self._file = None

    def accept(self) -> None:
        conn, _ = self._server.accept()
        conn.settimeout(TIMEOUT)
        self._conn = conn
        self._file = conn.makefile("rwb")

    def send(self, line: str) -> None:
        assert self._file is not None
        self._file.write(line.encode() + b"\n")
        self._file.flush()

    def receive(self) -> protocol.TransformMessage:
        assert self._file is not None
        return protocol.parse_transform_line(self._file.readline().decode())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._conn.close()
        self._server.close()


@pytest.fixture
def channel_dir() -> Iterator[Path]:
    # A socket path is limited to about 100 bytes: pytest's tmp_path may be too long.
    path = Path(tempfile.mkdtemp(prefix="es-ch-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def physics() -> PhysicsPayload:
    p = PhysicsPayload(PhysicsPayload.Params(process="minbias"))
    p.setup()
    return p


def start_transform(worker: Worker, outdir: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "parsl_es.payloads.physics", "service", "--process"]
    argv += ["minbias", "--campaign-seed", str(SEED), "--outdir", str(outdir), *extra]
    env = {**os.environ, "PARSL_ES_CHANNEL": worker.path}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def message(first: int, last: int, campaign_seed: int = SEED) -> protocol.RangeMessage:
    return protocol.RangeMessage(
        range_id=f"c-{first}-{last}",
        first_event=first,
        last_event=last,
        seed=range_seed(campaign_seed, first),
    )


def serve(worker: Worker, ranges: list[protocol.RangeMessage]) -> list[protocol.TransformMessage]:
    """One range per Ready; the answers in order."""
    answers = []
    for r in ranges:
        assert worker.receive() == protocol.Ready(1)
        worker.send(protocol.ranges_line([r]))
        answers.append(worker.receive())
    return answers


def finish(worker: Worker, proc: subprocess.Popen) -> tuple[int, str, str]:
    assert worker.receive() == protocol.Ready(1)
    worker.send(protocol.NO_MORE)
    out, err = proc.communicate(timeout=TIMEOUT)
    worker.close()
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.integration  # starts real transforms for seconds
def test_service_serves_ranges_with_the_in_process_events(
    physics: PhysicsPayload, channel_dir: Path, tmp_path: Path
) -> None:
    worker = Worker(channel_dir)
    proc = start_transform(worker, tmp_path / "out")  # the channel from the environment
    try:
        worker.accept()
        ranges = [message(0, 1), message(2, 4), message(9, 9)]
        answers = serve(worker, ranges)
        code, out, err = finish(worker, proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert "3 ranges done, 0 failed" in out
    for r, answer in zip(ranges, answers, strict=True):
        assert isinstance(answer, protocol.RangeDone), answer
        assert answer.range_id == r.range_id
        assert answer.wall > 0 and answer.cpu >= 0
        path = Path(answer.path)
        assert path.is_absolute() and path.parent == (tmp_path / "out").resolve()
        numbers = rootio.read_events(path, ["event_number"])["event_number"]
        assert list(numbers) == list(range(r.first_event, r.last_event + 1))
        inproc = tmp_path / f"inproc-{r.range_id}.root"
        physics.simulate(
            EventRange("c", 0, r.first_event, r.last_event, 0, campaign_seed=SEED), inproc
        )
        assert rootio.content_hash(path) == rootio.content_hash(inproc)
    # written atomically: no temporary file left behind
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{r.range_id}.root" for r in ranges
    )


@pytest.mark.integration  # starts real transforms for seconds
def test_failed_ranges_are_reported_and_the_transform_goes_on(
    channel_dir: Path, tmp_path: Path
) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "c-0-0.root").mkdir()  # the range's file cannot be written: an OSError in the range
    worker = Worker(channel_dir)
    proc = start_transform(worker, outdir, "--channel", worker.path)
    try:
        worker.accept()
        ranges = [
            message(0, 0),
            message(5, 3),
            message(1, 1, campaign_seed=SEED + 1),
            message(2, 2),
        ]
        broken, backwards, wrong_seed, fine = serve(worker, ranges)
        code, out, err = finish(worker, proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert isinstance(broken, protocol.RangeFailed) and not broken.fatal
    assert broken.range_id == "c-0-0" and "Error" in broken.message
    assert backwards == protocol.RangeFailed("c-5-3", "bad event numbers 5..3", fatal=True)
    assert isinstance(wrong_seed, protocol.RangeFailed) and wrong_seed.fatal
    assert "--campaign-seed" in wrong_seed.message
    assert isinstance(fine, protocol.RangeDone) and fine.range_id == "c-2-2"
    assert "1 ranges done, 3 failed" in out
    assert "ERR_ATHENAMP_PROCESS c-0-0" in err
    assert not [p for p in outdir.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.integration  # starts real transforms for seconds
def test_protocol_error_exits_non_zero(channel_dir: Path, tmp_path: Path) -> None:
    worker = Worker(channel_dir)
    proc = start_transform(worker, tmp_path / "out")
    try:
        worker.accept()
        assert worker.receive() == protocol.Ready(1)
        worker.send("give me events")
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        worker.close()
    assert proc.returncode == 1
    assert "service: error: neither ranges nor 'No more events'" in err.decode()


@pytest.mark.integration  # starts real transforms for seconds
def test_worker_gone_exits_non_zero(channel_dir: Path, tmp_path: Path) -> None:
    worker = Worker(channel_dir)
    proc = start_transform(worker, tmp_path / "out")
    try:
        worker.accept()
        assert worker.receive() == protocol.Ready(1)
        worker.close()
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "closed the channel" in err.decode()


def test_no_channel_is_an_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PARSL_ES_CHANNEL"}
    argv = [sys.executable, "-m", "parsl_es.payloads.physics", "service", "--campaign-seed", "1"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "no --channel and no $PARSL_ES_CHANNEL" in proc.stderr


# --- the benchmark's stand-in transform ---------------------------------------------------

STANDIN = Path(__file__).resolve().parents[1] / "benchmarks" / "standin_transform.py"


@pytest.mark.integration  # starts real transforms for seconds
def test_standin_transform_in_both_modes(channel_dir: Path, tmp_path: Path) -> None:
    """Both forms write an events TTree the built-in merge reads (not uproot's RNTuple)."""
    single = tmp_path / "single.root"
    argv = [sys.executable, str(STANDIN), "range", "--first-event", "3", "--last-event", "5"]
    subprocess.run([*argv, "--output", str(single)], check=True, timeout=TIMEOUT)
    worker = Worker(channel_dir)
    argv = [sys.executable, str(STANDIN), "service", "--channel", worker.path]
    proc = subprocess.Popen(
        [*argv, "--outdir", str(tmp_path / "out"), "--init-seconds", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        worker.accept()
        done, backwards = serve(worker, [message(6, 7), message(9, 8)])
        code, _, err = finish(worker, proc)
    finally:
        proc.kill()
    assert code == 0, err
    assert isinstance(done, protocol.RangeDone) and done.range_id == "c-6-7"
    assert isinstance(backwards, protocol.RangeFailed) and not backwards.fatal
    merged = tmp_path / "merged.root"
    assert rootio.merge_files([single, Path(done.path)], merged) == 5
    assert list(rootio.read_events(merged)["event_number"]) == [3, 4, 5, 6, 7]


def test_benchmark_campaign_payloads(tmp_path: Path) -> None:
    """benchmarks.service's per-range payload runs a range; service is accepted once it exists."""
    from benchmarks.service import accepted, payload_spec
    from parsl_es.payloads import make_payload

    with_mode = accepted(payload_spec("per_range", 0, 0, with_mode=True)) is None
    spec = payload_spec("per_range", 0.1, 0.01, with_mode=with_mode)
    assert accepted(spec) is None
    payload = make_payload("command", {k: v for k, v in spec.items() if k != "name"})
    payload.setup()
    output = tmp_path / "ranges" / ".tmp-abc123def456-c-4-6.attempt-1.root"
    output.parent.mkdir()
    r = EventRange("c", 0, 4, 6, 0, campaign_seed=SEED)
    assert payload.simulate(r, output) == 3
    assert list(payload.event_numbers(output)) == [4, 5, 6]
    service = accepted(payload_spec("service", 0.1, 0.01, with_mode=with_mode))
    assert (service is None) == with_mode, service
