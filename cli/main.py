"""``es-run``: submit and follow event-service campaigns.

Thin by design: it parses options, calls ``parsl_es`` and prints. ``submit`` and
``resume`` share ``_run`` (prepare, then execute with a progress display) and one
table of exit codes (``running.OUTCOMES``): 0 complete, 1 failed (fatal ranges or
failed validation), 2 bad input or no space left, 3 stopped or incomplete
(resumable with ``es-run resume``), 4 the allocation is ending. A ``UserError``
from any command, and a usage error (an unknown option, a value of the wrong
type), is caught in one place (``_Commands``): one line on stderr, exit 2, no
traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from typer.core import TyperGroup

from parsl_es import UserError
from parsl_es.errors import one_line
from parsl_es.interrupts import Interrupted

from .chain_output import found_line, print_chain_status, print_chain_validation
from .consoles import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, out
from .options import EndOpt, MarginOpt, MonitoringOpt, SetOpt, SiteOpt, WalltimeOpt
from .sites import sites_app
from .tables import status_tables, summary_lines

try:  # typer vendors click since 0.2x; its own exceptions are what the parser raises
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer, on click itself
    from click import exceptions as click_errors

if TYPE_CHECKING:
    from parsl_es.api import PreparedRun


class _Commands(TyperGroup):
    """Every command's bad input, in one place: one line on stderr, exit 2, no traceback."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        try:
            with _usage_errors_in_one_line():
                return super().invoke(ctx)
        except UserError as exc:
            _refuse(str(exc))
            raise typer.Exit(EXIT_USAGE) from None


def _refuse(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


@contextmanager
def _usage_errors_in_one_line() -> Iterator[None]:
    """Click's usage errors (unknown option, bad value, missing argument) as one line too."""
    try:
        yield
    except click_errors.NoArgsIsHelpError:
        raise  # 'es-run' alone: the help is what was asked for
    except click_errors.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        command = ctx.command_path if ctx is not None else "es-run"
        _refuse(one_line(f"{command}: {exc.format_message()} (see '{command} --help')"))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="es-run",
    help="Run event-service simulation campaigns on Parsl.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=_Commands,
)


def _run(
    prepare: Callable[[], PreparedRun],
    walltime: str | None,
    end: str | None,
    margin: float,
    monitoring: bool,
) -> NoReturn:
    """Check every input (``prepare``), run with a live display, exit as the run ended.

    Signals are caught from the first moment (``StopOnSignal``): a Ctrl-C while
    the files are read or the site loads stops at once with nothing written. What
    only a run needs is imported here: ``es-run status`` starts without it.
    """
    from parsl_es import api

    from .progress import ProgressDisplay
    from .running import StopOnSignal, allocation, finish, interrupted

    prepared = None
    with StopOnSignal(err) as signals:
        try:
            prepared = prepare()
            ends = allocation(walltime, end, out)
            spec = prepared.spec
            if not prepared.resume:
                for line in _plan_lines(prepared):
                    out.print(line, highlight=False)
            with ProgressDisplay(err, spec.name) as progress:
                result = api.execute(
                    prepared,
                    on_progress=progress,
                    on_start=signals.started,
                    stop=signals.event,
                    allocation_end=ends,
                    margin_seconds=margin,
                    monitoring=monitoring,
                )
        except Interrupted as exc:
            output = prepared.output if prepared is not None else None
            raise typer.Exit(interrupted(exc, signals.running, output, err)) from None
    raise typer.Exit(finish(result, prepared.output, out, err))


def _plan_lines(prepared: PreparedRun) -> list[str]:
    """What a new campaign will do; a chain's steps each on a line of their own."""
    spec, site, output = prepared.spec, prepared.site.name, escape(str(prepared.output))
    steps = spec.step_plans()
    if steps[0].name is None:
        return [
            f"campaign [bold]{spec.name}[/]: {spec.events} events in "
            f"{spec.plan.n_ranges} ranges, {spec.plan.n_merges} merge groups, payload "
            f"{spec.payload.name}, site {site} -> {output}"
        ]
    lines = [
        f"campaign [bold]{spec.name}[/]: {spec.events} events through a chain of "
        f"{len(steps)} steps, site {site} -> {output}"
    ]
    for step in steps:
        reads = f", reads {step.input}'s merged files" if step.input else ""
        lines.append(
            f"  step [bold]{step.name}[/]: {step.plan.n_ranges} ranges, {step.plan.n_merges} "
            f"merge groups, payload {step.payload[0]}{reads}"
        )
    return lines


@app.command()
def submit(
    campaign: Annotated[str, typer.Argument(help="campaign YAML file, or a shipped campaign name")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="output directory (new or empty); default: the campaign's 'output' key, "
            "else NAME-output",
        ),
    ] = None,
    site: SiteOpt = "local",
    overrides: SetOpt = None,
    walltime: WalltimeOpt = None,
    end: EndOpt = None,
    margin: MarginOpt = 300.0,
    monitoring: MonitoringOpt = False,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="run the whole driver on this Globus Compute endpoint (UUID), with a site of "
            "that machine (--site); prints the task id to follow with status and fetch",
        ),
    ] = None,
) -> None:
    """Start a campaign and follow it until it is complete."""
    from parsl_es import api

    if endpoint:
        _submit_remote(api.load(campaign)[0], endpoint, output, site, overrides or [])
        return
    _run(
        lambda: api.prepare(campaign, output, site=site, overrides=overrides),
        walltime,
        end,
        margin,
        monitoring,
    )


@app.command()
def resume(
    output: Annotated[Path, typer.Argument(help="the campaign's output directory")],
    site: Annotated[
        str | None, typer.Option("--site", "-s", help="site (default: the one it ran on)")
    ] = None,
    overrides: SetOpt = None,
    walltime: WalltimeOpt = None,
    end: EndOpt = None,
    margin: MarginOpt = 300.0,
    monitoring: MonitoringOpt = False,
) -> None:
    """Continue an interrupted campaign, re-running only what is not done."""
    from parsl_es import api

    _run(
        lambda: api.prepare_resume(output, site=site, overrides=overrides),
        walltime,
        end,
        margin,
        monitoring,
    )


def _submit_remote(spec: Any, endpoint: str, output: Path | None, site: str, sets: list) -> None:
    """Ship a campaign checked here to an endpoint, which checks the rest with its site."""
    from parsl_es.remote import RemoteCampaigns

    if output is None and not spec.output:
        raise UserError("a remote campaign needs --output: a directory on the endpoint's machine")
    target = str(output or spec.output)
    task = RemoteCampaigns().submit(json.loads(spec.to_json()), endpoint, target, site, sets)
    out.print(f"submitted to endpoint {endpoint}: task {task}", highlight=False)
    out.print(
        f"follow it with: es-run status {task} --endpoint; fetch it with: es-run fetch {task}",
        highlight=False,
    )


@app.command()
def fetch(
    task: Annotated[str, typer.Argument(help="the Globus Compute task id es-run submit printed")],
    to: Annotated[Path, typer.Option("--to", help="where to put summary and report")] = Path("."),
) -> None:
    """Bring back a remote campaign's summary, job report and timeline."""
    from parsl_es.remote import RemoteCampaigns

    summary = RemoteCampaigns().fetch(task, to)
    result = summary["result"]
    out.print(
        f"{result['message']} ({summary['host']}:{summary['output']}); "
        f"summary, jobReport.json and timeline.png in {to}",
        highlight=False,
    )
    raise typer.Exit(EXIT_OK if result["status"] == "complete" else EXIT_FAILED)


@app.command()
def status(
    output: Annotated[
        Path,
        typer.Argument(help="the campaign's output directory (or, with --endpoint, a task id)"),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    endpoint: Annotated[
        bool, typer.Option("--endpoint", help="OUTPUT is a remote campaign's Globus Compute task")
    ] = False,
) -> None:
    """Ranges and merges by state, from the ledger (also while the campaign runs)."""
    from dataclasses import asdict

    from parsl_es.ledger import open_campaign

    if endpoint:
        from parsl_es.remote import RemoteCampaigns

        state = RemoteCampaigns().status(str(output))
        if as_json:
            print(json.dumps(state, default=str))
        else:
            error = f" ({state['error']})" if state.get("error") else ""
            out.print(f"task {output}: {state.get('status')}{error}", highlight=False)
        return

    ledger = open_campaign(output, readonly=True)
    try:
        if ledger.chain_steps():
            campaign = ledger.campaign_json()
            steps = [(step, part.summary()) for step, part in ledger.steps()]
            print_chain_status(output, campaign, steps, as_json)
            return
        summary = ledger.summary()
        name = ledger.plan.campaign
    finally:
        ledger.close()
    if as_json:
        print(json.dumps(asdict(summary) | {"campaign": name, "complete": summary.complete}))
        return
    out.print(f"[bold]campaign {name}[/] ({output})", highlight=False)
    for table in status_tables(summary):
        out.print(table)
    for line in summary_lines(summary):
        out.print(line, highlight=False)


@app.command()
def validate(
    output: Annotated[Path, typer.Argument(help="the campaign's output directory")],
) -> None:
    """Re-read every merged file: every event exactly once, checksums as recorded."""
    from parsl_es.validate_local import validate_output

    report = validate_output(output)
    if "steps" in report:
        print_chain_validation(report, output)
    out.print(found_line(report), highlight=False)
    if report["passed"]:
        out.print("validation passed", highlight=False)
        raise typer.Exit(EXIT_OK)
    for problem in report["problems"]:
        err.print(f"problem: {problem}", highlight=False)
    raise typer.Exit(EXIT_FAILED)


app.add_typer(sites_app, name="sites")


@app.command()
def report(
    output: Annotated[Path, typer.Argument(help="the campaign's output directory")],
    to: Annotated[
        Path | None, typer.Option("--to", help="where to write the report (default DIR/report)")
    ] = None,
) -> None:
    """Write the campaign report: HTML page with timeline, throughput, physics; jobReport.json."""
    from parsl_es.report import build_report

    page = build_report(output, to)
    out.print(f"report: {page}", highlight=False)
    out.print(f"provenance: {page.parent / 'jobReport.json'}", highlight=False)


def main() -> None:
    # A log file that cannot be written (a full disk) must not print tracebacks:
    # the ledger is the record, and the user gets one clear message.
    logging.raiseExceptions = False
    app()  # signals during a run: running.StopOnSignal


if __name__ == "__main__":
    main()
