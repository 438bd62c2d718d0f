"""A stand-in for an experiment transform whose initialisation is expensive.

It does no physics: it sleeps ``--init-seconds`` once when it starts (an Athena
initialisation takes about a minute), then ``--seconds-per-event`` per event, and
writes a real minimal ROOT file per range (an ``events`` tree with the
``event_number`` branch the command payload counts). The same program runs in
both modes of the command payload, so ``benchmarks.service`` measures one cost
model twice:

    per range: python -m benchmarks.standin_transform range \\
                   --first-event F --last-event L --output PATH [--init-seconds S ...]
    service:   python -m benchmarks.standin_transform service \\
                   [--channel PATH] [--outdir DIR] [--init-seconds S ...]

In service mode it speaks the event-service protocol
(``parsl_es.event_service``, docs/service-mode.md) over the worker's
Unix socket (``--channel``, default ``$PARSL_ES_CHANNEL``).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parsl_es import event_service as protocol
from parsl_es import rootio

CHANNEL_ENV = "PARSL_ES_CHANNEL"


def write_range(first: int, last: int, output: Path, seconds_per_event: float) -> None:
    """'Simulate' events first..last: sleep, then write them atomically to ``output``."""
    if first < 0 or last < first:
        raise ValueError(f"bad event numbers {first}..{last}")
    time.sleep(seconds_per_event * (last - first + 1))
    tmp = output.with_name(f".tmp-{os.getpid()}-{output.name}")
    try:
        # a TTree (uproot's ``f[name] = dict`` writes an RNTuple, which the merge cannot read)
        rootio.write_events(tmp, {"event_number": np.arange(first, last + 1, dtype=np.int64)})
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)


def per_range(args: argparse.Namespace) -> int:
    time.sleep(args.init_seconds)
    write_range(args.first_event, args.last_event, args.output, args.seconds_per_event)
    return 0


def service(args: argparse.Namespace) -> int:
    if not args.channel:
        raise ValueError(f"no --channel and no ${CHANNEL_ENV}")
    args.outdir.mkdir(parents=True, exist_ok=True)
    time.sleep(args.init_seconds)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(args.channel)
    channel = sock.makefile("rwb")

    def send(line: str) -> None:
        channel.write(line.encode() + b"\n")
        channel.flush()

    try:
        while True:
            send(protocol.ready_line())
            raw = channel.readline(protocol.MAX_LINE + 2)
            if not raw:
                raise protocol.ProtocolError("the worker closed the channel without a goodbye")
            ranges = protocol.parse_worker_line(raw.decode())
            if ranges is None:
                return 0
            for r in ranges:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                name = re.sub(r"[^A-Za-z0-9._-]", "_", r.range_id).lstrip(".") + ".root"
                output = (args.outdir / name).resolve()
                try:
                    write_range(r.first_event, r.last_event, output, args.seconds_per_event)
                except Exception as exc:  # a failed range is reported; the transform goes on
                    send(protocol.failed_line(r.range_id, f"{type(exc).__name__}: {exc}"))
                    continue
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                send(protocol.done_line(r.range_id, str(output), cpu, wall))
    finally:
        channel.close()
        sock.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.standin_transform", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    for name in ("range", "service"):
        p = sub.add_parser(name)
        p.add_argument("--init-seconds", type=float, default=0.0, help="sleep once at start")
        p.add_argument("--seconds-per-event", type=float, default=0.0, help="sleep per event")
        if name == "range":
            p.add_argument("--first-event", type=int, required=True)
            p.add_argument("--last-event", type=int, required=True)
            p.add_argument("--output", type=Path, required=True)
        else:
            p.add_argument("--channel", default=os.environ.get(CHANNEL_ENV))
            p.add_argument("--outdir", type=Path, default=Path("."))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return per_range(args) if args.mode == "range" else service(args)
    except (OSError, ValueError) as exc:  # ProtocolError is a ValueError
        print(f"standin_transform {args.mode}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
