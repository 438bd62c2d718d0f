"""A stand-in for a long-lived event-service transform (``mode: service``), in Python.

Connects to ``$PARSL_ES_CHANNEL``, asks for events, writes each range it is given
as an ``events`` tree of its event numbers in its work directory and reports it,
until ``No more events``. Faults on request, from the environment:

``FAKE_TF_STARTS_DIR``   one file per start, named ``<worker pid>-<own pid>``, holding
                         the ``--channel`` argument and ``$PARSL_ES_CHANNEL``
``FAKE_TF_INIT_SECONDS`` initialisation time before the first ``Ready for events``
``FAKE_TF_INIT_CRASH``   exit 3 while initialising (after printing ``marker-5678``)
``FAKE_TF_READY_N``      ask for this many ranges at a time
``FAKE_TF_FAULT_EVENT``  the first event of the range that gets ``FAKE_TF_FAULT``:
                         ``kill`` (SIGKILL itself), ``hang``, ``garbage``, ``unknown``
                         (reports another range id), ``err``, ``fatal``, ``nofile``,
                         ``quit`` (exits after reporting it, without asking for more)
``FAKE_TF_ONCE``         a path: the fault (or the initialisation crash) happens only
                         while no file is there, and makes it, so a campaign's retry
                         of the range (or the restarted transform) goes through

A range with a ``PFN`` (read from an input file) is copied from that file's events
tree, every branch, positions ``startEvent..lastEvent`` (1-based, inclusive); started
with ``--input FILE`` it fails (fatally) a range of another file, as a transform
initialised with one file would read the wrong events.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time
from pathlib import Path

from parsl_es import event_service as protocol


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--channel", required=True)
    parser.add_argument("--seed-arg", help="a campaign seed it was started with (ignored)")
    parser.add_argument("--input", help="the file it is initialised with: its ranges' PFN")
    args = parser.parse_args()
    env = os.environ
    channel = env["PARSL_ES_CHANNEL"]
    if starts := env.get("FAKE_TF_STARTS_DIR"):
        marker = Path(starts) / f"{os.getppid()}-{os.getpid()}"
        marker.write_text(f"{args.channel}\n{channel}\n{args.input or ''}")
    time.sleep(float(env.get("FAKE_TF_INIT_SECONDS", "0")))
    if env.get("FAKE_TF_INIT_CRASH") and _first_time(env):
        print("fake_transform: cannot initialise, marker-5678", flush=True)
        return 3
    import numpy as np

    from parsl_es import rootio  # the events TTree the engine merges and validates

    fault_event = int(env.get("FAKE_TF_FAULT_EVENT", "-1"))
    fault = env.get("FAKE_TF_FAULT", "")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(channel)
    lines = sock.makefile("r", encoding="utf-8")

    def say(line: str) -> None:
        sock.sendall(line.encode() + b"\n")

    while True:
        say(protocol.ready_line(int(env.get("FAKE_TF_READY_N", "1"))))
        ranges = protocol.parse_worker_line(lines.readline())
        if ranges is None:
            print("fake_transform: no more events", flush=True)
            return 0
        for r in ranges:
            started = time.monotonic()
            if r.first_event == fault_event and _first_time(env):
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if fault == "hang":
                    time.sleep(3600)
                if fault == "garbage":
                    say("this is no message")
                    continue
                if fault == "unknown":
                    say(protocol.done_line("not-my-range", "x.root", 0, 0))
                    continue
                if fault in ("err", "fatal"):
                    say(protocol.failed_line(r.range_id, "G4Exception\nbad", fault == "fatal"))
                    continue
                if fault == "nofile":
                    say(protocol.done_line(r.range_id, "missing.root", 0, 0))
                    continue
            path = Path(f"{r.range_id}.root")
            if r.pfn is not None:
                if args.input is not None and r.pfn != args.input:
                    message = f"started with {args.input}, given a range of {r.pfn}"
                    say(protocol.failed_line(r.range_id, message, fatal=True))
                    continue
                columns = rootio.read_events(Path(r.pfn))
                start, stop = r.start_event - 1, r.last_event_in_file
                rootio.write_events(path, {k: v[start:stop] for k, v in columns.items()})
            else:
                numbers = np.arange(r.first_event, r.last_event + 1, dtype=np.int64)
                rootio.write_events(path, {"event_number": numbers})
            wall = time.monotonic() - started
            say(protocol.done_line(r.range_id, str(path), wall, wall))
            if r.first_event == fault_event and fault == "quit":
                return 0  # done, then gone before asking for more


def _first_time(env: os._Environ) -> bool:
    """Without ``FAKE_TF_ONCE`` always; with it, only until its file exists."""
    once = env.get("FAKE_TF_ONCE")
    if not once:
        return True
    try:
        Path(once).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
