"""The physics payload as an external program, the way an experiment's transform is run.

``python -m parsl_es.payloads.physics simulate ...`` and ``... merge ...`` give the
``command`` payload a real transform to drive in tests and serve as an example of
the contract a transform has to meet: arguments in, one ROOT file out, exit code
0 on success (2 on bad arguments, 1 on a failure, with a one-line message on
stderr), and optionally an ATLAS-like ``jobReport.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from parsl_es.payloads.base import PayloadError
from parsl_es.payloads.physics.payload import PhysicsParams, PhysicsPayload
from parsl_es.ranges import EventRange

PROG = "python -m parsl_es.payloads.physics"


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
