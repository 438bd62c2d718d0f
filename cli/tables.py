"""Tables that ``es-run`` prints: campaign status and site lists."""

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
    return [
        _state_table("event ranges", RANGE_STATES, s.ranges, s.n_ranges),
        _state_table("merge groups", MERGE_STATES, s.merges, s.n_merges),
    ]


def summary_lines(s: Summary) -> list[str]:
    return [
        f"events: {s.events_done}/{s.events_total} simulated, {s.events_merged} merged",
        f"merges validated: {s.validated['passed']}/{s.n_merges} passed"
        + (f", {s.validated['failed']} failed" if s.validated["failed"] else ""),
        f"campaign validation: {s.campaign_validation or 'not yet run'}",
        "state: " + ("COMPLETE" if s.complete else "incomplete"),
    ]
