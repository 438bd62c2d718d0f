"""Heterogeneous placement of a chain: each step on its preferred node type, or everywhere.

A three-step chain gen -> simul -> reco on a site with a CPU node type and a
GPU node type. gen and reco cost the same on both; simul runs 10 times faster
on the GPU node type. Placements (each chain step's ``node_types``, in
preference order; merges and validations run on cpu, the site's choice):

- ``naive``: every step on [cpu, gpu] (the baseline);
- ``preferred``: gen [cpu], simul [gpu], reco [cpu]: each step only where it runs best;
- ``preferred-first``: gen [cpu, gpu], simul [gpu, cpu], reco [cpu, gpu]: every
  step everywhere, its preferred node type first;
- ``preferred+overflow``: gen [cpu], simul [gpu, cpu], reco [cpu]: simul may
  overflow onto the CPUs, the GPUs run simul only.

Two machines:

- simulated (``SimulatedBackend``, virtual clock, deterministic): hundreds of
  CPU workers, tens of GPU workers, tens of thousands of events. Per-step costs
  are the backend's ``step_speedup``; payload work and files are made up.
- real HTEX on this machine, tiny: the local site with a second node type ``gpu``
  whose one worker owns a fake accelerator (HTEX sets its CUDA_VISIBLE_DEVICES),
  one ``cpu`` worker; the ``emulate`` payload sleeps per event, and simul's
  ``accelerated_speedup: 10`` makes it sleep 10 times less on the gpu worker.

For each placement: wall time, events/s of the whole chain (events / wall) and
of each step over its own span (first range started to last range finished:
every step processes every event, so over the whole wall they would all be the
same), the share of each step's events each node type ran, and each node
type's utilisation (time in ranges / (workers x wall); merges and validations
not counted).

    python -m benchmarks.placement [--sim-only | --real-only] [--quick] [--events N]
        [--cpu-workers N] [--gpu-workers N] [--real-events N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Clock, report, scratch
from parsl_es.ledger import LEDGER_NAME, Ledger

STEPS = ("gen", "simul", "reco")
#: Seconds per event on a CPU worker (simulated machine); the GPU runs simul 10x faster.
SIM_COST = {"gen": 0.5, "simul": 10.0, "reco": 2.5}
#: Seconds slept per event on the real, tiny machine (1 cpu + 1 gpu worker): simul
#: dominates, so that, as on the simulated machine, the GPU is the preferred
#: placement's bottleneck (its CPU work is half its GPU work).
REAL_COST = {"gen": 0.005, "simul": 0.5, "reco": 0.02}
GPU_SPEEDUP = {"simul": 10.0}
EVENTS_PER_RANGE = {"gen": 50, "simul": 5, "reco": 20}
EVENTS_PER_MERGE = {"gen": 500, "simul": 100, "reco": 500}
REAL_EVENTS_PER_RANGE = {"gen": 10, "simul": 2, "reco": 5}
REAL_EVENTS_PER_MERGE = {"gen": 50, "simul": 20, "reco": 100}

CPU, GPU = "cpu", "gpu"
PLACEMENTS: dict[str, dict[str, list[str]]] = {
    "naive": {"gen": [CPU, GPU], "simul": [CPU, GPU], "reco": [CPU, GPU]},
    "preferred": {"gen": [CPU], "simul": [GPU], "reco": [CPU]},
    "preferred-first": {"gen": [CPU, GPU], "simul": [GPU, CPU], "reco": [CPU, GPU]},
    "preferred+overflow": {"gen": [CPU], "simul": [GPU, CPU], "reco": [CPU]},
}


def chain(
    events: int,
    placement: dict[str, list[str]],
    *,
    per_range: dict[str, int],
    per_merge: dict[str, int],
    seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The campaign: emulate stand-ins, each step on the placement's node types.

    With ``seconds`` each step's payload sleeps that long per event (simul 10x less
    on a worker owning an accelerator); without, the payload does no work (the
    simulated backend makes its results up and takes its durations from the machine).
    """
    steps: dict[str, Any] = {}
    before = None
    for name in STEPS:
        payload: dict[str, Any] = {"name": "emulate", "output_format": "npy"}
        if seconds is not None:
            payload["seconds_per_event"] = seconds[name]
            if name in GPU_SPEEDUP:
                payload["accelerated_speedup"] = GPU_SPEEDUP[name]
        steps[name] = {
            "payload": payload,
            "events_per_range": per_range[name],
            "events_per_merge": per_merge[name],
            "node_types": placement[name],
        } | ({"input": before} if before else {})
        before = name
    return {"name": "placement", "events": events, "seed": 13, "chain": steps}


def two_node_types(cpu_workers: int, gpu_workers: int) -> Any:
    """The local site with its node type as ``cpu`` and a ``gpu`` copy owning accelerators."""
    from parsl_es.sites import load_site
    from parsl_es.sites.spec import SiteSpec

    data = load_site("local").model_dump(mode="json", by_alias=True)
    local = data["node_types"].pop("local")
    data["name"] = "local-cpu-gpu"
    data["description"] = "this machine as a CPU node type and a GPU node type (fake devices)"
    data["node_types"] = {
        CPU: local | {"workers_per_node": cpu_workers, "description": "CPU workers"},
        GPU: local
        | {
            "workers_per_node": gpu_workers,
            "accelerators": [str(i) for i in range(gpu_workers)],
            "description": "one worker per (fake) accelerator",
        },
    }
    data["steps"] = {"simulate": [CPU], "merge": CPU, "validate": CPU}
    return SiteSpec.model_validate(data)


def ideal_wall(
    cost: dict[str, float], workers: dict[str, int], events: int, placement: dict[str, list[str]]
) -> float:
    """The least wall time the placement allows as a fluid: every worker always busy, work
    split freely among each step's node types, no pipeline fill or drain, no merges.

    Two node types: the GPU takes the steps it is relatively best at first (a step's GPU
    over CPU cost, lowest first) up to a wall time T, found by bisection.
    """
    on = {CPU: dict(cost), GPU: {s: c / GPU_SPEEDUP.get(s, 1.0) for s, c in cost.items()}}

    def fits(t: float) -> bool:
        room = {nt: t * workers[nt] for nt in (CPU, GPU)}
        flexible = []
        for s in STEPS:
            if len(set(placement[s])) == 1:
                room[placement[s][0]] -= events * on[placement[s][0]][s]
            else:
                flexible.append(s)
        for s in sorted(flexible, key=lambda s: on[GPU][s] / on[CPU][s]):
            on_gpu = min(events, max(0.0, room[GPU]) / on[GPU][s])
            room[GPU] -= on_gpu * on[GPU][s]
            room[CPU] -= (events - on_gpu) * on[CPU][s]
        return min(room.values()) >= -1e-9

    lo, hi = 0.0, events * sum(cost.values())
    for _ in range(60):
        lo, hi = (lo, (lo + hi) / 2) if fits((lo + hi) / 2) else ((lo + hi) / 2, hi)
    return hi


# --- figures from a finished run's ledger ------------------------------------------------------


def figures(out: Path, wall: float, workers: dict[str, int], events: int) -> dict[str, Any]:
    """Events/s of the chain and of each step, node types' shares and utilisation.

    ``last_s``: when each node type finished its last range of the step, from the
    first range's start: a node type that finishes long before another sat idle.
    """
    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        ranges = {name: list(step.ranges()) for name, step in ledger.steps()}
    for name, rows in ranges.items():
        assert all(r.started is not None and r.finished is not None for r in rows), name
    t0 = min(r.started for rows in ranges.values() for r in rows)  # type: ignore[type-var]
    busy = dict.fromkeys(workers, 0.0)
    steps: dict[str, Any] = {}
    for name, rows in ranges.items():
        span = max(r.finished for r in rows) - min(r.started for r in rows)  # type: ignore[operator]
        by_type: dict[str, int] = {}
        last: dict[str, float] = {}
        for r in rows:
            nt = r.node_type or "?"
            by_type[nt] = by_type.get(nt, 0) + (r.n_events or 0)
            busy[nt] = busy.get(nt, 0.0) + (r.finished - r.started)  # type: ignore[operator]
            last[nt] = max(last.get(nt, 0.0), r.finished - t0)  # type: ignore[operator]
        done = sum(by_type.values())
        steps[name] = {
            "events": done,
            "span_s": round(span, 2),
            "events_per_s": round(done / span, 3) if span > 0 else None,
            "share": {nt: round(n / done, 3) for nt, n in sorted(by_type.items())},
            "last_s": {nt: round(t, 2) for nt, t in sorted(last.items())},
        }
    return {
        "wall_s": round(wall, 2),
        "events_per_s": round(events / wall, 3),
        "steps": steps,
        "utilisation": {nt: round(busy[nt] / (workers[nt] * wall), 3) for nt in workers},
    }


def row(name: str, f: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    def shares(v: dict[str, Any]) -> str:
        return "+".join(f"{nt} {p:.0%}" for nt, p in v["share"].items())

    steps = "  ".join(f"{s} {v['events_per_s']:.3g}/s ({shares(v)})" for s, v in f["steps"].items())
    util = " ".join(f"{nt} {u:.0%}" for nt, u in f["utilisation"].items())
    simul = " ".join(f"{nt} {t:.1f} s" for nt, t in f["steps"]["simul"]["last_s"].items())
    speed = f"  x{baseline['wall_s'] / f['wall_s']:.2f} vs naive" if baseline else ""
    return (
        f"  {name:19s} wall {f['wall_s']:9.1f} s (ideal {f['ideal_wall_s']:.1f} s)  "
        f"chain {f['events_per_s']:.3g} ev/s{speed}\n"
        f"  {'':19s} {steps}\n  {'':19s} utilisation {util}; last simul range ends {simul}"
    )


# --- the simulated machine ---------------------------------------------------------------------


def sim_machine(cpu_workers: int, gpu_workers: int, spread: float = 0.1) -> dict[str, Any]:
    """Node types whose per-step range durations are ``SIM_COST`` x events per range.

    ``range_seconds`` is a CPU worker's simul range; ``step_speedup`` makes the other
    steps' ranges take their own cost, and simul 10x faster on the GPU node type.
    """
    from parsl_es.backends.simulated import SimNodeType

    simul_range = SIM_COST["simul"] * EVENTS_PER_RANGE["simul"]

    def speedups(gpu: bool) -> dict[str, float]:
        return {
            s: simul_range
            / (SIM_COST[s] * EVENTS_PER_RANGE[s])
            * (GPU_SPEEDUP.get(s, 1.0) if gpu else 1.0)
            for s in STEPS
        }

    return {
        CPU: SimNodeType(
            workers=cpu_workers,
            pools=max(1, cpu_workers // 64),
            range_seconds=simul_range,
            spread=spread,
            step_speedup=speedups(False),
        ),
        GPU: SimNodeType(
            workers=gpu_workers,
            pools=max(1, gpu_workers // 4),
            range_seconds=simul_range,
            spread=spread,
            step_speedup=speedups(True),
        ),
    }


def run_simulated(
    directory: Path,
    placement: dict[str, list[str]],
    *,
    events: int,
    cpu_workers: int,
    gpu_workers: int,
    seed: int = 1,
) -> dict[str, Any]:
    """One chain on the simulated machine, through the real engine and a real ledger."""
    from parsl_es.backends.simulated import SimulatedBackend
    from parsl_es.campaign import campaign_from_dict
    from parsl_es.engine.dispatcher import Dispatcher, Settings
    from parsl_es.run import output_dirs, resolve_stages

    spec = campaign_from_dict(
        chain(events, placement, per_range=EVENTS_PER_RANGE, per_merge=EVENTS_PER_MERGE)
    )
    out = directory / "out"
    for sub in output_dirs(spec):
        (out / sub).mkdir(parents=True)
    Ledger.create(
        out / LEDGER_NAME,
        {"campaign": spec.to_json()},
        steps={s.name: s.plan for s in spec.step_plans()},
    ).close()
    stages = resolve_stages(spec, two_node_types(1, 1))
    sim = SimulatedBackend(sim_machine(cpu_workers, gpu_workers), seed=seed)
    with Clock() as clock, Ledger.open(out / LEDGER_NAME) as ledger:
        result = Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            stages=stages,
            settings=Settings(attempts=3),
        ).run()
    assert result.status == "complete", result.message
    workers = {CPU: cpu_workers, GPU: gpu_workers}
    f = figures(out, result.wall_seconds, workers, events)
    ideal = ideal_wall(SIM_COST, workers, events, placement)
    return f | {"ideal_wall_s": round(ideal, 2), "driver_cpu_s": round(clock.cpu, 2)}


def simulated(events: int, cpu_workers: int, gpu_workers: int) -> dict[str, Any]:
    print(
        f"simulated: {cpu_workers} cpu + {gpu_workers} gpu workers, {events} events; per event "
        f"on cpu gen {SIM_COST['gen']} s, simul {SIM_COST['simul']} s, reco {SIM_COST['reco']} s; "
        f"simul x{GPU_SPEEDUP['simul']:g} on gpu",
        flush=True,
    )
    results: dict[str, Any] = {}
    for name, placement in PLACEMENTS.items():
        with scratch(f"es-placement-{name}-") as tmp:
            results[name] = run_simulated(
                tmp, placement, events=events, cpu_workers=cpu_workers, gpu_workers=gpu_workers
            )
        print(row(name, results[name], results.get("naive") if name != "naive" else None))
    return results


# --- real HTEX, tiny ---------------------------------------------------------------------------


def real(events: int) -> dict[str, Any]:
    from parsl_es import api
    from parsl_es.backends.parsl import ParslBackend

    print(
        f"real HTEX: 1 cpu + 1 gpu worker (fake accelerator), {events} events; sleep per event "
        f"gen {REAL_COST['gen']} s, simul {REAL_COST['simul']} s (/{GPU_SPEEDUP['simul']:g} on "
        f"gpu), reco {REAL_COST['reco']} s",
        flush=True,
    )
    site = two_node_types(1, 1)
    results: dict[str, Any] = {}
    with scratch("es-placement-real-") as tmp, ParslBackend(site, tmp / "parsl") as session:
        t0 = time.time()
        while any((session.connected_workers(nt) or 0) < 1 for nt in (CPU, GPU)):
            if time.time() - t0 > 120:
                raise RuntimeError("workers did not connect within 120 s")
            time.sleep(0.2)
        # a throw-away run first: every worker imports parsl_es and numpy once
        warm = chain(
            20,
            PLACEMENTS["naive"],
            per_range=REAL_EVENTS_PER_RANGE,
            per_merge=REAL_EVENTS_PER_MERGE | {"simul": 20, "reco": 20},
            seconds=dict.fromkeys(STEPS, 0.0),
        )
        assert api.run_campaign(warm, tmp / "warm", session=session).status == "complete"
        for name in PLACEMENTS:
            spec = chain(
                events,
                PLACEMENTS[name],
                per_range=REAL_EVENTS_PER_RANGE,
                per_merge=REAL_EVENTS_PER_MERGE,
                seconds=REAL_COST,
            )
            out = tmp / name
            result = api.run_campaign(spec, out, session=session)
            assert result.status == "complete", result.message
            workers = {CPU: 1, GPU: 1}
            results[name] = figures(out, result.wall_seconds, workers, events) | {
                "ideal_wall_s": round(ideal_wall(REAL_COST, workers, events, PLACEMENTS[name]), 2)
            }
            print(row(name, results[name], results.get("naive") if name != "naive" else None))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sim-only", action="store_true")
    which.add_argument("--real-only", action="store_true")
    parser.add_argument("--events", type=int, default=20_000, help="simulated (default 20000)")
    parser.add_argument("--cpu-workers", type=int, default=256)
    parser.add_argument("--gpu-workers", type=int, default=32)
    parser.add_argument("--real-events", type=int, default=200, help="real HTEX (default 200)")
    parser.add_argument(
        "--quick", action="store_true", help="4,000 events on 64 + 32 workers; 100 real events"
    )
    args = parser.parse_args()
    if args.quick:
        args.events, args.cpu_workers, args.gpu_workers, args.real_events = 4000, 64, 32, 100
    out: dict[str, Any] = {"benchmark": "placement"}
    if not args.real_only:
        out["simulated"] = simulated(args.events, args.cpu_workers, args.gpu_workers)
    if not args.sim_only:
        out["real"] = real(args.real_events)
    line = "; ".join(
        f"{where} {name} {f['wall_s']} s ({f['events_per_s']} ev/s)"
        for where in ("simulated", "real")
        for name, f in out.get(where, {}).items()
    )
    report(out, "placement: " + line)


if __name__ == "__main__":
    main()
