"""Campaigns on the simulated backend: a real ledger on disk, the real engine, no Parsl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parsl_es.backends.simulated import SimFaults, SimNodeType, SimulatedBackend
from parsl_es.campaign import campaign_from_dict
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.result import RunResult
from parsl_es.engine.steps import Placement
from parsl_es.engine.timeouts import TimeoutPolicy
from parsl_es.ledger import LEDGER_NAME, Ledger

OUTPUT_DIRS = ("ranges", "merged", "validation", "logs")
NO_FAULTS = SimFaults()
#: Timeouts short enough to matter within a simulated campaign of seconds.
SHORT_TIMEOUTS = TimeoutPolicy(factor=5.0, floor=5.0, ceiling=60.0)


def new_campaign(directory: Path, **fields: Any) -> Path:
    """An output directory with a fresh ledger for a small emulate campaign."""
    data = {
        "name": "sim",
        "events": 400,
        "events_per_range": 2,
        "events_per_merge": 40,
        "seed": 5,
        "payload": {"name": "emulate", "output_format": "npy"},
    } | fields
    spec = campaign_from_dict(data)
    out = directory / "out"
    out.mkdir()
    for sub in OUTPUT_DIRS:
        (out / sub).mkdir()
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, spec.plan).close()
    return out


def backend(
    faults: SimFaults = NO_FAULTS, run_functions: bool = False, seed: int = 1, **node_types
) -> SimulatedBackend:
    types = node_types or {"cpu": SimNodeType(workers=8, range_seconds=1.0)}
    return SimulatedBackend(types, faults, seed=seed, run_functions=run_functions)


def drive(
    out: Path,
    sim: SimulatedBackend,
    *,
    attempts: int = 3,
    timeouts: TimeoutPolicy = SHORT_TIMEOUTS,
    **settings: Any,
) -> RunResult:
    """Run the engine once on ``out``; every node type simulates, the first merges."""
    on_progress = settings.pop("on_progress", None)
    stop = settings.pop("stop", None)
    names = sim.node_types()
    placement = Placement(simulate=names, merge=names[0], validate=names[0])
    with Ledger.open(out / LEDGER_NAME) as ledger:
        spec = ledger.campaign_json()["payload"]
        payload = (spec.pop("name"), spec)
        return Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            payload=payload,
            placement=placement,
            settings=Settings(attempts=attempts, timeouts=timeouts, **settings),
            on_progress=on_progress,
            stop=stop,
        ).run()


def range_attempts(out: Path) -> dict[int, int]:
    """Attempts of every range done or merged, from the ledger."""
    from parsl_es.states import RangeState

    with Ledger.open(out / LEDGER_NAME, readonly=True) as ledger:
        return {r.index: r.attempts for r in ledger.ranges([RangeState.DONE, RangeState.MERGED])}


def chain_data(**fields: Any) -> dict[str, Any]:
    """A three-step emulate chain: gen -> sim -> rec, each cut its own way."""
    npy = {"name": "emulate", "output_format": "npy"}
    return {
        "name": "chain",
        "events": 200,
        "seed": 5,
        "chain": {
            "gen": {"payload": npy, "events_per_range": 5, "events_per_merge": 20},
            "sim": {"payload": npy, "input": "gen", "events_per_range": 2, "events_per_merge": 10},
            "rec": {"payload": npy, "input": "sim", "events_per_range": 5, "events_per_merge": 40},
        },
    } | fields


def new_chain(directory: Path, **fields: Any) -> Path:
    """An output directory with a fresh chain ledger (every step's folders made)."""
    from parsl_es.run import output_dirs

    spec = campaign_from_dict(chain_data(**fields))
    out = directory / "out"
    for sub in output_dirs(spec):
        (out / sub).mkdir(parents=True)
    steps = {s.name: s.plan for s in spec.step_plans()}
    Ledger.create(out / LEDGER_NAME, {"campaign": spec.to_json()}, steps=steps).close()
    return out


def drive_chain(
    out: Path,
    sim: SimulatedBackend,
    node_types: dict[str, list[str]] | None = None,
    *,
    attempts: int = 3,
    **settings: Any,
) -> RunResult:
    """Run the engine once on a chain: each step on its ``node_types`` (default: all)."""
    from parsl_es.engine.dispatcher import Stage
    from parsl_es.run import spec_from_json

    stop = settings.pop("stop", None)
    on_progress = settings.pop("on_progress", None)
    names = sim.node_types()
    with Ledger.open(out / LEDGER_NAME) as ledger:
        spec = spec_from_json(ledger.campaign_json())
        stages = [
            Stage(
                step,
                Placement(
                    simulate=(node_types or {}).get(step.name, names),
                    merge=names[0],
                    validate=names[0],
                ),
            )
            for step in spec.step_plans()
        ]
        return Dispatcher(
            ledger=ledger,
            backend=sim,
            output_dir=out,
            stages=stages,
            settings=Settings(attempts=attempts, timeouts=SHORT_TIMEOUTS, **settings),
            on_progress=on_progress,
            stop=stop,
        ).run()
