"""``es-run sites``: list, show and check site configurations."""

from __future__ import annotations

from typing import Annotated

import typer

from .consoles import EXIT_FAILED, out
from .options import SetOpt

sites_app = typer.Typer(help="Site configurations.", invoke_without_command=True)


@sites_app.callback()
def sites(ctx: typer.Context) -> None:
    """List the shipped site configurations."""
    if ctx.invoked_subcommand is not None:
        return
    from parsl_es.sites import load_site, shipped_sites

    for name, path in sorted(shipped_sites().items()):
        spec = load_site(path)
        kinds = ", ".join(spec.node_types)
        out.print(f"[bold]{name:12}[/] node types: {kinds:20} {spec.description}", highlight=False)


@sites_app.command("show")
def sites_show(
    name: Annotated[str, typer.Argument(help="site name or file")], overrides: SetOpt = None
) -> None:
    """Print a site's resolved configuration (defaults filled in, overrides applied)."""
    import yaml

    from parsl_es.sites import load_site

    spec = load_site(name, overrides)
    data = spec.model_dump(mode="json", by_alias=True)
    for nt_name, nt in spec.node_types.items():  # the value in force, not "unset"
        data["node_types"][nt_name]["encrypted"] = nt.effective_encrypted
    print(yaml.safe_dump(data, sort_keys=False), end="")


@sites_app.command("check")
def sites_check(
    name: Annotated[str, typer.Argument(help="site name or file")], overrides: SetOpt = None
) -> None:
    """Say what a site still needs before it can run campaigns from here (exit 1 if anything)."""
    from parsl_es.sites import check_site, load_site

    spec = load_site(name, overrides)
    problems, warnings = check_site(spec)
    for problem in problems:
        out.print(f"[red]missing:[/] {problem}", highlight=False)
    for warning in warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)
    out.print(f"site {spec.name}: ready ({', '.join(spec.node_types)})", highlight=False)
