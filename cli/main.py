"""``es-run``: submit and follow event-service campaigns.

Thin by design: it parses options, calls ``parsl_es`` and prints. Exit codes:
0 complete, 1 failed (fatal ranges or failed validation), 2 bad input,
3 stopped or incomplete (resumable with ``es-run resume``).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from parsl_es import UserError
from parsl_es.dispatcher import RunResult

from .progress import ProgressDisplay
from .tables import status_tables, summary_lines

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_WALLTIME = 0, 1, 2, 3, 4

app = typer.Typer(
    name="es-run",
    help="Run event-service simulation campaigns on Parsl.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(exc: UserError) -> None:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _guarded(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except UserError as exc:
        _fail(exc)


class _StopOnSignal:
    """First SIGINT/SIGTERM: stop gracefully (no new ranges). Second SIGINT: abort."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        err.print(
            f"\n{signal.Signals(signum).name}: finishing what is in flight, starting nothing new "
            "(Ctrl-C again to abort at once)"
        )

    def __enter__(self) -> threading.Event:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self.event

    def __exit__(self, *_: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _finish(result: RunResult, output: Path) -> None:
    out.print(
        f"{result.message}\n"
        f"this run: {result.events_this_run} events in {result.ranges_this_run} ranges, "
        f"{result.merges_this_run} merges, {result.wall_seconds:.1f} s wall, "
        f"{result.events_per_second:.1f} events/s, {result.failures} failed attempts, "
        f"{result.workers} workers (payload initialised {result.payload_inits} times)",
        highlight=False,
    )
    if result.status == "complete":
        out.print(f"outputs: {output}/merged   validation: {output}/validation", highlight=False)
        raise typer.Exit(EXIT_OK)
    if result.status == "stopped":
        err.print(f"campaign incomplete; continue it with: es-run resume {output}")
        raise typer.Exit(EXIT_INCOMPLETE)
    if result.status == "no_space":
        err.print(f"error: {result.message}: es-run resume {output}", highlight=False)
        raise typer.Exit(EXIT_USAGE)
    if result.status == "walltime":
        if result.last_range_started and result.ended:
            tail = result.ended - result.last_range_started
            spare = (result.allocation_end or result.ended) - result.ended
            out.print(
                f"the last range started {tail:.1f} s before the driver left, "
                f"{spare:.1f} s before the allocation's end",
                highlight=False,
            )
        err.print(
            f"campaign incomplete (allocation ending); in the next allocation run: "
            f"es-run resume {output}"
        )
        raise typer.Exit(EXIT_WALLTIME)
    err.print(f"see {output}/logs/driver.log; 'es-run resume {output}' retries what failed")
    raise typer.Exit(EXIT_FAILED)


SiteOpt = Annotated[str, typer.Option("--site", "-s", help="site name or site YAML file")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a site field: account=m1234, gpu.qos=debug, ..."),
]
WalltimeOpt = Annotated[
    str | None,
    typer.Option(
        "--walltime",
        help="the allocation ends this long from now ([D-]HH:MM:SS); "
        "default: SLURM_JOB_END_TIME inside a Slurm job",
    ),
]
EndOpt = Annotated[
    str | None, typer.Option("--end", help="the allocation ends at this time (ISO or epoch)")
]
MonitoringOpt = Annotated[
    bool,
    typer.Option(
        "--monitoring",
        help="record tasks and resource use with Parsl's MonitoringHub in DIR/monitoring.db "
        "(open with parsl-visualize)",
    ),
]
MarginOpt = Annotated[
    float,
    typer.Option("--margin", help="seconds before the end by which started work must be done"),
]


def _allocation(walltime: str | None, end: str | None) -> float | None:
    from parsl_es.allocation import allocation_end

    when, source = _guarded(lambda: allocation_end(walltime, end))
    if when is not None:
        left = when - time.time()
        if left <= 0:
            _fail(UserError(f"the allocation end ({source}) is already past"))
        out.print(f"allocation ends in {left:.0f} s ({source})", highlight=False)
    return when


@app.command()
def submit(
    campaign: Annotated[str, typer.Argument(help="campaign YAML file, or a shipped campaign name")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="output directory (new or empty)")
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
    from parsl_es import run
    from parsl_es.campaign import load_campaign, resolve_campaign_path
    from parsl_es.sites import load_site

    spec = _guarded(lambda: load_campaign(campaign))
    source = str(resolve_campaign_path(campaign))
    if endpoint:
        _submit_remote(spec, endpoint, output, site, overrides or [])
        return
    site_spec = _guarded(lambda: load_site(site, overrides))
    out_dir = _guarded(lambda: run.output_for(spec, output))
    _guarded(lambda: run.resolve_steps(spec, site_spec, source))
    _guarded(lambda: run.preflight(spec, source))
    _guarded(lambda: run.require_usable(site_spec))
    _guarded(lambda: run.check_new_output(out_dir))
    ends = _allocation(walltime, end)
    out.print(
        f"campaign [bold]{spec.name}[/]: {spec.events} events in {spec.plan.n_ranges} ranges, "
        f"{spec.plan.n_merges} merge groups, payload {spec.payload.name}, site {site_spec.name} "
        f"-> {out_dir}",
        highlight=False,
    )
    with _StopOnSignal() as stop, ProgressDisplay(err, spec.name) as progress:
        result = _guarded(
            lambda: run.submit(
                spec,
                out_dir,
                site=site_spec,
                on_progress=progress,
                stop=stop,
                allocation_end=ends,
                margin_seconds=margin,
                monitoring=monitoring,
            )
        )
    _finish(result, out_dir)


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
    from parsl_es import run
    from parsl_es.sites import load_site

    ledger = _guarded(lambda: run.open_campaign(output))
    name = ledger.plan.campaign
    if site is None and overrides:
        _fail(UserError("--set needs --site (the recorded site is used as it was)"))
    site_spec = _guarded(lambda: load_site(site, overrides) if site else run.recorded_site(ledger))
    ledger.close()
    _guarded(lambda: run.require_usable(site_spec))
    ends = _allocation(walltime, end)
    with _StopOnSignal() as stop, ProgressDisplay(err, name) as progress:
        result = _guarded(
            lambda: run.resume(
                output,
                site=site_spec,
                on_progress=progress,
                stop=stop,
                allocation_end=ends,
                margin_seconds=margin,
                monitoring=monitoring,
            )
        )
    _finish(result, output)


def _submit_remote(spec: Any, endpoint: str, output: Path | None, site: str, sets: list) -> None:
    from parsl_es.remote import RemoteCampaigns

    if output is None and not spec.output:
        _fail(UserError("a remote campaign needs --output: a directory on the endpoint's machine"))
    target = str(output or spec.output)
    campaign = json.loads(spec.to_json())
    remote = _guarded(RemoteCampaigns)
    task = _guarded(lambda: remote.submit(campaign, endpoint, target, site, sets))
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

    remote = _guarded(RemoteCampaigns)
    summary = _guarded(lambda: remote.fetch(task, to))
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

    from parsl_es import run

    if endpoint:
        from parsl_es.remote import RemoteCampaigns

        state = _guarded(lambda: RemoteCampaigns().status(str(output)))
        if as_json:
            print(json.dumps(state, default=str))
        else:
            error = f" ({state['error']})" if state.get("error") else ""
            out.print(f"task {output}: {state.get('status')}{error}", highlight=False)
        return

    ledger = _guarded(lambda: run.open_campaign(output, readonly=True))
    try:
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

    report = _guarded(lambda: validate_output(output))
    out.print(
        f"{report['events_found']}/{report['events_expected']} events found in "
        f"{report['merged_files']} merged files; missing {report['events_missing']}, "
        f"duplicated {report['events_duplicated']}",
        highlight=False,
    )
    if report["passed"]:
        out.print("validation passed", highlight=False)
        raise typer.Exit(EXIT_OK)
    for problem in report["problems"]:
        err.print(f"problem: {problem}", highlight=False)
    raise typer.Exit(EXIT_FAILED)


sites_app = typer.Typer(help="Site configurations.", invoke_without_command=True)
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

    page = _guarded(lambda: build_report(output, to))
    out.print(f"report: {page}", highlight=False)
    out.print(f"provenance: {page.parent / 'jobReport.json'}", highlight=False)


@sites_app.callback()
def sites(ctx: typer.Context) -> None:
    """List the shipped site configurations."""
    if ctx.invoked_subcommand is not None:
        return
    from parsl_es.sites import load_site, shipped_sites

    for name, path in sorted(shipped_sites().items()):
        spec = _guarded(lambda p=path: load_site(p))
        kinds = ", ".join(spec.node_types)
        out.print(f"[bold]{name:12}[/] node types: {kinds:20} {spec.description}", highlight=False)


@sites_app.command("show")
def sites_show(
    name: Annotated[str, typer.Argument(help="site name or file")], overrides: SetOpt = None
) -> None:
    """Print a site's resolved configuration (defaults filled in, overrides applied)."""
    from parsl_es.sites import load_site

    spec = _guarded(lambda: load_site(name, overrides))
    print(yaml.safe_dump(spec.model_dump(mode="json", by_alias=True), sort_keys=False), end="")


@sites_app.command("check")
def sites_check(
    name: Annotated[str, typer.Argument(help="site name or file")], overrides: SetOpt = None
) -> None:
    """Say what a site still needs before it can run campaigns from here (exit 1 if anything)."""
    from parsl_es.sites import check_site, load_site

    spec = _guarded(lambda: load_site(name, overrides))
    problems, warnings = check_site(spec)
    for problem in problems:
        out.print(f"[red]missing:[/] {problem}", highlight=False)
    for warning in warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)
    out.print(f"site {spec.name}: ready ({', '.join(spec.node_types)})", highlight=False)


def main() -> None:
    # A log file that cannot be written (a full disk) must not print tracebacks:
    # the ledger is the record, and the user gets one clear message.
    logging.raiseExceptions = False
    try:
        app()
    except KeyboardInterrupt:
        err.print("aborted; the ledger is consistent: continue with 'es-run resume DIR'")
        sys.exit(EXIT_INCOMPLETE)


if __name__ == "__main__":
    main()
