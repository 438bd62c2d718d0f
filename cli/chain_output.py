"""What ``es-run status`` and ``es-run validate`` print for a chain (several steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.markup import escape

from .consoles import EXIT_FAILED, EXIT_OK, err, out
from .tables import chain_json, chain_lines, status_tables, step_heading, summary_lines


def print_chain_status(output: Path, campaign: dict, steps: list, as_json: bool) -> None:
    """A chain's status: each step's tables under its name, then a line for the chain."""
    if as_json:
        print(json.dumps(chain_json(campaign["name"], steps)))
        return
    from dataclasses import replace

    out.print(f"[bold]campaign {escape(campaign['name'])}[/] ({output})", highlight=False)
    for position, (step, summary) in enumerate(steps, 1):
        heading = step_heading(step, position, len(steps), campaign)
        out.print(f"\n[bold]{escape(heading)}[/]", highlight=False)
        for table in status_tables(replace(summary, transforms={})):
            out.print(table)
        for line in summary_lines(summary):
            out.print(f"  {line}", highlight=False)
    out.print("")
    shared = steps[0][1]  # the steps share the workers: their transforms are listed once
    if shared.transforms:
        out.print(status_tables(replace(shared, by_node_type={}))[-1])
    for line in chain_lines(steps):
        out.print(line, highlight=False)


def found_line(report: dict) -> str:
    return (
        f"{report['events_found']}/{report['events_expected']} events found in "
        f"{report['merged_files']} merged files; missing {report['events_missing']}, "
        f"duplicated {report['events_duplicated']}"
    )


def print_chain_validation(report: dict, output: Path) -> NoReturn:
    """Each step's validation on its own lines; exit 1 if any step failed."""
    for name, step in report["steps"].items():
        verdict = "passed" if step["passed"] else "FAILED"
        out.print(f"step {name}: {found_line(step)}; {verdict}", highlight=False)
    if report["passed"]:
        out.print(f"validation passed: every step ({len(report['steps'])})", highlight=False)
        raise typer.Exit(EXIT_OK)
    for problem in report["problems"]:
        err.print(f"problem: {problem}", highlight=False)
    failed = [name for name, step in report["steps"].items() if not step["passed"]]
    err.print(
        f"validation FAILED in step {', '.join(failed)}; 'es-run resume {output}' redoes its "
        "damaged merged files",
        highlight=False,
    )
    raise typer.Exit(EXIT_FAILED)
