"""Per-event cost of the MC chain's steps (evgen, simul on the CPU, reco) on ttbar events.

One process, the steps one after the other on the same events, so the figures
size a chain campaign: seconds per event of each step, and each step's one-off
set-up per worker. CPU time is reported beside wall time: on a shared machine
it is the steadier of the two.

    python -m benchmarks.mc_chain [--events 50] [--process ttbar]
"""

from __future__ import annotations

import argparse

from benchmarks.common import Clock, report, scratch
from parsl_es.payloads import make_payload
from parsl_es.ranges import EventRange


def step_range(n: int, input: str | None = None) -> EventRange:
    return EventRange("bench", 0, 0, n - 1, 0, 7, input=input)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--process", default="ttbar", choices=("ttbar", "qcd", "minbias"))
    args = parser.parse_args()
    n = args.events
    rows = {}
    with scratch("es-mc-chain-") as tmp:
        files = {"evgen": tmp / "evgen.hepmc", "simul": tmp / "sim.root", "reco": tmp / "aod.root"}
        inputs = {"evgen": None, "simul": str(files["evgen"]), "reco": str(files["simul"])}
        for step, params in (("evgen", {"process": args.process}), ("simul", {}), ("reco", {})):
            payload = make_payload(step, params)
            with Clock() as setup:
                payload.setup()
            # reco's first range loads FastJet: not a per-event cost.
            payload.simulate(step_range(1, inputs[step]), tmp / f"warm-{step}")
            with Clock() as run:
                payload.simulate(step_range(n, inputs[step]), files[step])
            rows[step] = {
                "wall_ms_per_event": round(1000 * run.wall / n, 1),
                "cpu_ms_per_event": round(1000 * run.cpu / n, 1),
                "setup_s": round(setup.wall, 2),
                "kb_per_event": round(files[step].stat().st_size / n / 1024, 1),
            }
    report(
        {"benchmark": "mc_chain", "process": args.process, "events": n, "steps": rows},
        f"mc_chain ({n} {args.process} events, one core): "
        + ", ".join(
            f"{s} {r['cpu_ms_per_event']:.0f} ms CPU/event ({r['wall_ms_per_event']:.0f} wall, "
            f"{r['kb_per_event']:.0f} kB)"
            for s, r in rows.items()
        )
        + f"; Pythia set-up {rows['evgen']['setup_s']:.1f} s",
    )


if __name__ == "__main__":
    main()
