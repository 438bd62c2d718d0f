"""Service mode against per-range mode: a transform with an expensive initialisation.

The same campaign (``command`` payload driving ``benchmarks/standin_transform.py``,
2 workers on the local site) runs twice on one loaded Parsl session: with
``mode: per_range`` each range starts the transform, which sleeps
``--init-seconds`` before its events; with ``mode: service`` each worker starts it
once and feeds it ranges over a Unix socket (docs/service-mode.md). Per mode:

* events/s: the campaign's events over its wall time (``run_campaign``, merges
  and validation included);
* ``range_share``: the share of worker time spent in ranges after the first
  initialisation, which every mode pays once: the time in ranges net of
  initialisations (from the ledger's range durations), over workers x (wall -
  init seconds). In per-range mode every range's duration includes its own
  initialisation, so ``init_seconds`` is taken off each; in service mode it is
  taken off each worker's first range unless the ledger records it as the
  payload's setup (where the worker side puts the transform's start is its
  business). What remains of a range is its events plus the process start
  (Python and its imports) and the command payload's own work;
* ``busy_share``: the ledger's range durations, initialisations included, over
  workers x wall: how busy the workers were.

    python -m benchmarks.service [--init-seconds 20 --seconds-per-event 0.5 --ranges 12]
    python -m benchmarks.service --quick            # 2 s init, 0.1 s/event, 6 ranges

Service mode needs the command payload's ``mode: service``; where it is not
accepted yet, its run is skipped with a message and its figures are null.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pydantic import ValidationError

from benchmarks.common import Clock, report, scratch
from parsl_es import api
from parsl_es.backends.parsl import ParslBackend
from parsl_es.errors import UserError
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.payloads import PayloadError, make_payload
from parsl_es.sites import load_site

WORKERS = 2
STANDIN = Path(__file__).resolve().with_name("standin_transform.py")


def payload_spec(mode: str, init: float, per_event: float, with_mode: bool) -> dict:
    program = f"{shlex.quote(sys.executable)} {shlex.quote(str(STANDIN))}"
    timing = f"--init-seconds {init:g} --seconds-per-event {per_event:g}"
    if mode == "service":
        simulate = f"{program} service --channel {{channel}} {timing}"
    else:
        simulate = (
            f"{program} range --first-event {{first_event}} --last-event {{last_event}} "
            f"--output {{output}} {timing}"
        )
    spec = {"name": "command", "simulate": simulate}
    return {**spec, "mode": mode} if with_mode else spec


def accepted(spec: dict) -> str | None:
    """None if the command payload takes these parameters, else why not."""
    try:
        make_payload("command", {k: v for k, v in spec.items() if k != "name"})
    except (ValidationError, UserError, PayloadError, ValueError) as exc:
        return " ".join(str(exc).split())
    return None


def net_of_inits(rows: list, setups: dict[str | None, float], mode: str, init: float) -> float:
    """Seconds in ranges without the transform initialisations inside them (see above)."""
    if mode == "per_range":
        return sum(max(0.0, r.duration - init) for r in rows)
    total, seen = 0.0, set()
    for r in sorted(rows, key=lambda r: r.started or 0.0):
        duration = r.duration
        if r.worker not in seen:
            seen.add(r.worker)
            if setups.get(r.worker, 0.0) < init / 2:  # the start-up was inside this range
                duration = max(0.0, duration - init)
        total += duration
    return total


def run(session: ParslBackend, payload: dict, args: argparse.Namespace, out: Path) -> dict:
    n_events = args.ranges * args.events_per_range
    spec = {
        "name": f"service-{payload.get('mode', 'per_range')}",
        "events": n_events,
        "events_per_range": args.events_per_range,
        "events_per_merge": n_events,
        "seed": 1,
        "payload": payload,
    }
    with Clock() as clock:
        result = api.run_campaign(spec, out, session=session)
    if result.status != "complete":
        raise RuntimeError(f"{spec['name']}: {result.status}: {result.message}")
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        rows = [r for r in ledger.ranges() if r.duration is not None]
        setups: dict[str | None, float] = {}
        for t in ledger.tasks():
            if t.setup:
                setups[t.worker] = max(setups.get(t.worker, 0.0), t.setup)
    if len(rows) != args.ranges:
        raise RuntimeError(f"{spec['name']}: {len(rows)} range durations, {args.ranges} ranges")
    in_ranges = sum(r.duration for r in rows)
    net = net_of_inits(rows, setups, payload.get("mode", "per_range"), args.init_seconds)
    return {
        "events": n_events,
        "wall_s": round(clock.wall, 1),
        "events_per_s": round(n_events / clock.wall, 3),
        "range_share": round(net / (WORKERS * max(clock.wall - args.init_seconds, 1e-9)), 4),
        "busy_share": round(in_ranges / (WORKERS * clock.wall), 4),
        "mean_range_s": round(in_ranges / len(rows), 2),
        "payload_setup_s": round(max(setups.values()), 2) if setups else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--init-seconds", type=float, help="transform start-up (default 20)")
    parser.add_argument("--seconds-per-event", type=float, help="default 0.5")
    parser.add_argument("--events-per-range", type=int, help="default 20 (10 s ranges)")
    parser.add_argument("--ranges", type=int, help="default 12")
    parser.add_argument("--quick", action="store_true", help="2 s init, 0.1 s/event, 5x6 events")
    parser.add_argument("--only", choices=["per_range", "service"], help="run one mode")
    args = parser.parse_args()
    quick = (2.0, 0.1, 5, 6)
    full = (20.0, 0.5, 20, 12)
    defaults = quick if args.quick else full
    for name, default in zip(
        ("init_seconds", "seconds_per_event", "events_per_range", "ranges"), defaults, strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)

    # Before the campaign file knows ``mode``, per-range is the only mode (and takes no key).
    with_mode = accepted(payload_spec("per_range", 0, 0, with_mode=True)) is None
    modes = [args.only] if args.only else ["per_range", "service"]
    specs = {
        m: payload_spec(m, args.init_seconds, args.seconds_per_event, with_mode) for m in modes
    }
    skipped: dict[str, str] = {}
    if "service" in specs:
        why = accepted(specs["service"]) if with_mode else "the command payload has no 'mode' yet"
        if why is not None:
            skipped["service"] = why
            print(
                f"service: mode: service is not accepted by this parsl-es ({why}); "
                "its run is skipped (it needs the worker side of issue 12)",
                file=sys.stderr,
                flush=True,
            )
            del specs["service"]

    site = load_site("local", [f"workers_per_node={WORKERS}", "cores_per_worker=1"])
    results: dict[str, dict | None] = {m: None for m in modes}
    with scratch("es-service-") as tmp, ParslBackend(site, tmp / "p") as session:
        for mode, payload in specs.items():
            results[mode] = run(session, payload, args, tmp / mode)

    figures = {
        "benchmark": "service",
        "workers": WORKERS,
        "init_seconds": args.init_seconds,
        "seconds_per_event": args.seconds_per_event,
        "events_per_range": args.events_per_range,
        "ranges": args.ranges,
        **results,
        "skipped": skipped,
    }

    def shown(mode: str) -> str:
        r = results.get(mode)
        if r is None:
            return f"{mode} skipped" if mode in skipped else f"{mode} not run"
        return (
            f"{mode} {r['events_per_s']:.2f} events/s, {r['range_share']:.0%} of worker time "
            f"after the first init in ranges net of inits (workers {r['busy_share']:.0%} busy)"
        )

    report(
        figures,
        f"service: {args.ranges} ranges x {args.events_per_range} events, "
        f"{args.init_seconds:g} s init, {args.seconds_per_event:g} s/event, {WORKERS} workers: "
        + "; ".join(shown(m) for m in modes),
    )


if __name__ == "__main__":
    main()
