"""Tables that ``es-run`` prints: campaign status (a chain's per step) and site lists."""

from __future__ import annotations

from rich.table import Table

from parsl_es.ledger import MERGE_STATES, RANGE_STATES, Summary


def _state_table(title: str, states: tuple[str, ...], counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left")
    for state in (*states, "total"):
        table.add_column(state, justify="right")
    table.add_row(*(str(counts.get(x, 0)) for x in states), str(total))
    return table


def status_tables(s: Summary) -> list[Table]:
    tables = [
        _state_table("event ranges", RANGE_STATES, s.ranges, s.n_ranges),
        _state_table("merge groups", MERGE_STATES, s.merges, s.n_merges),
    ]
    if s.by_node_type:
        tables.append(_node_type_table(s))
    if s.transforms:
        tables.append(_transform_table(s))
    return tables


def _transform_table(s: Summary) -> Table:
    """Service mode: how often each worker started its transform, and what that cost."""
    table = Table(title="transforms (service mode) by worker", title_justify="left")
    for name in ("worker", "starts", "restarts", "init s", "init s/start"):
        table.add_column(name, justify="left" if name == "worker" else "right")
    for worker, row in s.transforms.items():
        table.add_row(
            worker,
            str(row["starts"]),
            str(row["restarts"]),
            f"{row['init_seconds']:.1f}",
            f"{row['mean_init_seconds']:.1f}",
        )
    return table


def _node_type_table(s: Summary) -> Table:
    """Which node types did the simulation: the split of a heterogeneous campaign."""
    table = Table(title="simulated by node type", title_justify="left")
    columns = ("node type", "ranges", "share", "events", "hosts", "jobs", "s/range")
    for name in (*columns, "lost", "failed"):
        table.add_column(name, justify="left" if name == "node type" else "right")
    done = sum(row["ranges"] for row in s.by_node_type.values()) or 1
    for nt, row in s.by_node_type.items():
        table.add_row(
            nt,
            str(row["ranges"]),
            f"{100.0 * row['ranges'] / done:.0f} %",
            str(row["events"]),
            str(row["hosts"]),
            str(row["batch_jobs"]),
            f"{row['mean_range_seconds']:.2f}",
            str(row["lost_attempts"]),
            str(row["failed_attempts"]),
        )
    return table


def summary_lines(s: Summary) -> list[str]:
    return [
        f"events: {s.events_done}/{s.events_total} simulated, {s.events_merged} merged",
        f"merges validated: {s.validated['passed']}/{s.n_merges} passed"
        + (f", {s.validated['failed']} failed" if s.validated["failed"] else ""),
        f"campaign validation: {s.campaign_validation or 'not yet run'}",
        "state: " + ("COMPLETE" if s.complete else "incomplete"),
    ]


def step_heading(name: str, position: int, count: int, campaign: dict) -> str:
    """The line above a chain step's tables: its name, payload and input."""
    step = campaign.get("chain", {}).get(name, {})
    payload = (step.get("payload") or {}).get("name", "?")
    source = step.get("input")
    reads = f"reads {source}" if isinstance(source, str) else "makes its own events"
    return f"step {name} ({position}/{count}): payload {payload}, {reads}"


def chain_lines(steps: list[tuple[str, Summary]]) -> list[str]:
    """The whole chain: complete once every step is (its campaign validation passed)."""
    passed = [name for name, s in steps if s.campaign_validation == "passed"]
    complete = all(s.complete for _, s in steps)
    waiting = [name for name, s in steps if not s.complete]
    return [
        f"chain: {len(passed)}/{len(steps)} steps validated"
        + (f"; not yet complete: {', '.join(waiting)}" if waiting else ""),
        "state: " + ("COMPLETE" if complete else "incomplete"),
    ]


def chain_json(name: str, steps: list[tuple[str, Summary]]) -> dict:
    """``es-run status --json`` of a chain: totals (each event once per step) and ``steps``."""
    from dataclasses import asdict

    return {
        "campaign": name,
        "chain": [step for step, _ in steps],
        "complete": all(s.complete for _, s in steps),
        "events_total": sum(s.events_total for _, s in steps),
        "events_done": sum(s.events_done for _, s in steps),
        "events_merged": sum(s.events_merged for _, s in steps),
        "steps": {step: asdict(s) | {"complete": s.complete} for step, s in steps},
    }
