"""The physics payload as an external program, the way an experiment's transform is run.

``python -m parsl_es.payloads.physics simulate ...`` and ``... merge ...`` give the
``command`` payload a real transform to drive in tests and serve as an example of
the contract a transform has to meet: arguments in, one ROOT file out, exit code
0 on success (2 on bad arguments, 1 on a failure, with a one-line message on
stderr), and optionally an ATLAS-like ``jobReport.json``.

``... service ...`` is the reference transform of the command payload's service
mode (docs/service-mode.md): it initialises Pythia and the detector once, connects
to the worker's Unix socket and simulates the ranges it is sent, speaking the
event-service protocol of ``parsl_es.event_service``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from parsl_es import event_service as protocol
from parsl_es.payloads.base import PayloadError
from parsl_es.payloads.physics.payload import PhysicsParams, PhysicsPayload
from parsl_es.ranges import EventRange, range_seed

PROG = "python -m parsl_es.payloads.physics"
#: Where the worker's socket is when ``--channel`` is not given.
CHANNEL_ENV = "PARSL_ES_CHANNEL"


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser("simulate", help="simulate events first..first+n-1 into one file")
    sim.add_argument("--first-event", type=_non_negative, required=True)
    sim.add_argument("--n-events", type=_positive, required=True)
    sim.add_argument("--campaign-seed", type=_non_negative, required=True)
    sim.add_argument("--output", type=Path, required=True)
    sim.add_argument("--process", choices=["ttbar", "qcd", "minbias"], default="ttbar")
    sim.add_argument("--run-number", type=_non_negative, default=1)
    sim.add_argument("--job-report", type=Path, help="write an ATLAS-like jobReport.json here")

    svc = sub.add_parser(
        "service", help="serve ranges over the event-service protocol (command mode: service)"
    )
    svc.add_argument("--campaign-seed", type=_non_negative, required=True)
    svc.add_argument("--process", choices=["ttbar", "qcd", "minbias"], default="ttbar")
    svc.add_argument("--run-number", type=_non_negative, default=1)
    svc.add_argument(
        "--channel",
        default=os.environ.get(CHANNEL_ENV),
        help=f"the worker's Unix socket (default: ${CHANNEL_ENV})",
    )
    svc.add_argument(
        "--outdir",
        type=Path,
        default=Path("."),
        help="directory for the range files (default: the working directory)",
    )

    merge = sub.add_parser("merge", help="concatenate range files listed in a file")
    merge.add_argument("--inputs-file", type=Path, required=True, help="one input path a line")
    merge.add_argument("--output", type=Path, required=True)
    merge.add_argument("--job-report", type=Path, help="write an ATLAS-like jobReport.json here")
    return parser


def simulate(args: argparse.Namespace) -> int:
    payload = PhysicsPayload(PhysicsParams(process=args.process, run_number=args.run_number))
    event_range = EventRange(
        campaign="ext",
        index=0,
        first_event=args.first_event,
        last_event=args.first_event + args.n_events - 1,
        merge_group=0,
        campaign_seed=args.campaign_seed,
    )
    return payload.simulate(event_range, args.output)


def merge(args: argparse.Namespace) -> int:
    lines = args.inputs_file.read_text().splitlines()
    inputs = [Path(line.strip()) for line in lines if line.strip()]
    return PhysicsPayload(PhysicsParams()).merge(inputs, args.output)


class ChannelClosed(protocol.ProtocolError):
    """The worker closed the socket without saying ``No more events``."""


class Channel:
    """The transform's end of the worker's socket: one protocol line at a time."""

    def __init__(self, path: str) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(path)
        self._file = self._sock.makefile("rwb")

    def send(self, line: str) -> None:
        self._file.write(line.encode() + b"\n")
        self._file.flush()

    def receive(self) -> list[protocol.RangeMessage] | None:
        raw = self._file.readline(protocol.MAX_LINE + 2)
        if not raw:
            raise ChannelClosed("the worker closed the channel without 'No more events'")
        if not raw.endswith(b"\n"):
            raise protocol.ProtocolError(f"a line longer than {protocol.MAX_LINE} characters")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise protocol.ProtocolError("a line that is not UTF-8") from None
        return protocol.parse_worker_line(text)

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def _range_file(outdir: Path, range_id: str) -> Path:
    """The range's output file: its id, made safe as a file name."""
    return outdir / (re.sub(r"[^A-Za-z0-9._-]", "_", range_id).lstrip(".") + ".root")


def _invalid(message: protocol.RangeMessage, campaign_seed: int) -> str | None:
    """Why this range can never succeed here (ERR_TE_FATAL), or None."""
    if message.first_event < 0 or message.last_event < message.first_event:
        return f"bad event numbers {message.first_event}..{message.last_event}"
    if message.pfn is not None or message.lfn is not None:
        return "the physics transform generates events; it reads no input file"
    expected = range_seed(campaign_seed, message.first_event)
    if message.seed != expected:
        return (
            f"range seed {message.seed} is not that of campaign seed {campaign_seed} "
            f"({expected}): was the transform started with the campaign's --campaign-seed?"
        )
    return None


def serve_range(
    payload: PhysicsPayload, message: protocol.RangeMessage, campaign_seed: int, outdir: Path
) -> str:
    """Simulate one range into its file (atomically) and return the protocol's answer."""
    if reason := _invalid(message, campaign_seed):
        return protocol.failed_line(message.range_id, reason, fatal=True)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    final = _range_file(outdir, message.range_id)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    event_range = EventRange(
        campaign="ext",
        index=0,
        first_event=message.first_event,
        last_event=message.last_event,
        merge_group=0,
        campaign_seed=campaign_seed,
    )
    try:
        payload.simulate(event_range, tmp)
        os.replace(tmp, final)
    except Exception as exc:  # any failure of one range is reported, not fatal
        tmp.unlink(missing_ok=True)
        text = " ".join(str(exc).split()) or type(exc).__name__
        return protocol.failed_line(message.range_id, f"{type(exc).__name__}: {text}")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return protocol.done_line(message.range_id, str(final.resolve()), cpu, wall)


def service(args: argparse.Namespace) -> int:
    """Initialise once, then serve ranges until ``No more events``."""
    if not args.channel:
        raise ValueError(f"no --channel and no ${CHANNEL_ENV}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    payload = PhysicsPayload(PhysicsParams(process=args.process, run_number=args.run_number))
    payload.setup()
    print(f"service: initialised in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    channel = Channel(args.channel)
    done = failed = 0
    try:
        while True:
            channel.send(protocol.ready_line())
            ranges = channel.receive()
            if ranges is None:
                break
            for message in ranges:
                answer = serve_range(payload, message, args.campaign_seed, args.outdir)
                if answer.startswith((protocol.ERR_RETRY, protocol.ERR_FATAL)):
                    failed += 1
                    print(f"service: {answer}", file=sys.stderr)
                else:
                    done += 1
                channel.send(answer)
    finally:
        channel.close()
    print(f"service: {done} ranges done, {failed} failed")
    return done


def write_job_report(path: Path, exit_code: int, message: str, started: float) -> None:
    """The fields of an ATLAS jobReport.json that a driver looks at."""
    report = {
        "exitCode": exit_code,
        "exitMsg": message,
        "exitAcronym": "OK" if exit_code == 0 else "TRF_EXEC_FAIL",
        "resource": {
            "transform": {
                "wallTime": round(time.time() - started, 3),
                "cpuTime": round(time.process_time(), 3),
            }
        },
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    started = time.time()
    args = build_parser().parse_args(argv)  # exits with code 2 on bad arguments
    if args.command == "service":
        try:
            service(args)
        except (PayloadError, OSError, ValueError) as exc:  # ProtocolError is a ValueError
            message = " ".join(str(exc).split()) or type(exc).__name__
            print(f"{PROG} service: error: {message}", file=sys.stderr)
            return 1
        return 0
    try:
        n_events = simulate(args) if args.command == "simulate" else merge(args)
    except (PayloadError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        if args.job_report:
            write_job_report(args.job_report, 1, message, started)
        return 1
    if args.job_report:
        write_job_report(args.job_report, 0, "OK", started)
    print(f"{args.command}: {n_events} events written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
