"""The one way in: ``prepare`` checks every input once, ``execute`` writes and runs.

Every front end goes through here: ``es-run submit``/``resume``, the notebook's
``parsl_es.submit`` (prepare in the caller's thread, execute in the background),
the blocking ``parsl_es.run_campaign``/``resume_campaign`` and the remote driver on
a Globus Compute endpoint. ``prepare`` checks the campaign, the site and its
``--set`` overrides, the steps against the site, the payload, that the site can
start here and the output directory, each once, before anything is written, and
returns a ``PreparedRun``. ``execute`` creates the output (or, to resume, takes
the campaign's lock and only then opens the ledger for writing) and hands it to
the engine through ``parsl_es.run.drive``.

``parsl_es.run`` stays the engine's side of that seam (``drive``, the driver's
log and run records); this module is the front ends' side.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from parsl_es import __version__
from parsl_es.campaign import (
    CampaignSpec,
    campaign_from_dict,
    load_campaign,
    resolve_campaign_path,
)
from parsl_es.chain import ChainSpec
from parsl_es.crashpoints import crash_point
from parsl_es.datasets import check_unchanged
from parsl_es.engine.result import RunResult
from parsl_es.errors import UserError
from parsl_es.ledger import LEDGER_NAME, Ledger, open_campaign
from parsl_es.lock import LEASE_NAME, LOCK_NAME, campaign_lock
from parsl_es.output_checks import check_launchable, check_new_output
from parsl_es.run import (
    DriverOptions,
    PreparedRun,
    drive,
    output_dirs,
    recorded_site,
    recorded_spec,
    resolve_stages,
)
from parsl_es.sites import SiteSpec, load_site
from parsl_es.sites.checks import site_problems

if TYPE_CHECKING:
    from parsl_es.backends.parsl import ParslBackend

Campaign = str | Path | dict[str, Any] | CampaignSpec | ChainSpec
Site = str | Path | SiteSpec


# --- preparing: every check once, nothing written -------------------------------------------


def prepare(
    campaign: Campaign,
    output: str | Path | None = None,
    *,
    site: Site = "local",
    overrides: list[str] | None = None,
    session: ParslBackend | None = None,
) -> PreparedRun:
    """Check a new campaign's every input, in the order a user would fix them.

    ``campaign`` is a file, a shipped name, a mapping or a ``CampaignSpec``;
    ``output`` defaults to the campaign's ``output`` key, else ``<name>-output``.
    With a loaded ``session`` its site is used as it is (already started here).
    """
    spec, source = load(campaign)
    crash_point("campaign-read")
    site_spec = _site(site, overrides, session)
    out = output_for(spec, output)
    stages = resolve_stages(spec, site_spec, source or "campaign")
    preflight(spec, source)
    if session is None:
        require_usable(site_spec)
        check_launchable(out)
    check_new_output(out)
    return PreparedRun(spec=spec, site=site_spec, stages=stages, output=out, source=source)


def prepare_resume(
    output: str | Path,
    *,
    site: Site | None = None,
    overrides: list[str] | None = None,
    session: ParslBackend | None = None,
) -> PreparedRun:
    """Check that ``output`` holds a campaign that can continue on ``site``.

    The site defaults to the one the campaign was submitted with (as it was:
    ``overrides`` need a ``site``). The ledger is only read here.
    """
    if site is None and overrides and session is None:
        raise UserError("--set needs --site (the recorded site is used as it was)")
    out = Path(output)
    ledger = open_campaign(out, readonly=True)
    try:
        spec = recorded_spec(ledger)
        site_spec = recorded_site(ledger) if site is None and session is None else None
    finally:
        ledger.close()
    if site_spec is None:
        site_spec = _site(site or "local", overrides, session)
    if isinstance(spec, ChainSpec) and spec.dataset:
        check_unchanged(spec.dataset)  # a changed file would mix two datasets in one output
    stages = resolve_stages(spec, site_spec, str(out / LEDGER_NAME))
    if session is None:
        require_usable(site_spec)
        check_launchable(out)
    return PreparedRun(spec=spec, site=site_spec, stages=stages, output=out, resume=True)


def load(campaign: Campaign) -> tuple[CampaignSpec | ChainSpec, str | None]:
    """The campaign, validated, and the file it came from (None for a mapping or spec)."""
    if isinstance(campaign, CampaignSpec | ChainSpec):
        return campaign, None
    if isinstance(campaign, dict):
        return campaign_from_dict(campaign), None
    file = resolve_campaign_path(campaign)
    return load_campaign(file), str(file)


def _site(site: Site, overrides: list[str] | None, session: ParslBackend | None) -> SiteSpec:
    if overrides and (session is not None or isinstance(site, SiteSpec)):
        raise UserError("--set applies to a site name or file, not to a loaded site")
    if session is not None:
        return session.site
    return site if isinstance(site, SiteSpec) else load_site(site, overrides)


def output_for(spec: CampaignSpec | ChainSpec, output: str | Path | None) -> Path:
    """The output directory: as given, else the campaign's ``output`` key, else NAME-output."""
    if output is not None:
        return Path(output)
    return Path(spec.output or f"{spec.name}-output")


def preflight(spec: CampaignSpec | ChainSpec, source: str | Path | None = None) -> None:
    """Refuse a campaign whose payloads can already tell they cannot run (no executable)."""
    from parsl_es.apps import worker_payload

    for step in spec.step_plans():
        problems = worker_payload(*step.payload, setup=False)[0].preflight()
        if problems:
            field, message = next(iter(problems.items()))
            at = "payload" if step.name is None else f"chain.{step.name}.payload"
            raise UserError(message, file=source, field=f"{at}.{field}")


def require_usable(site: SiteSpec) -> None:
    """Refuse a site that cannot start here (no account, no sbatch, ...), before writing."""
    problems, _ = site_problems(site)
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more: es-run sites check)" if len(problems) > 1 else ""
        file, line = site.source_line(first.loc)
        raise UserError(
            f"site '{site.name}' is not ready: {first.text}{more}", file=file, line=line
        )


# --- executing: write, lock, drive ------------------------------------------------------------


def execute(prepared: PreparedRun, **options: Unpack[DriverOptions]) -> RunResult:
    """Create the output (or continue it) and run the campaign until it ends or stops."""
    if prepared.resume:
        return _continue(prepared, options)
    out = prepared.output
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory: {exc.strerror}", file=out) from None
    started = _Started(options.get("on_start"))
    created = False
    try:
        with campaign_lock(out):
            ledger = create_output(prepared.spec, out, prepared.site)
            created = True
            try:
                return drive(ledger, prepared, **(options | {"on_start": started}))
            finally:
                ledger.close()
    except BaseException:
        # Bad input, a site that cannot start, a Ctrl-C in set-up: until the engine
        # has started, the output this call created holds nothing worth keeping. One
        # it did not create (another submit won the lock) is never touched.
        if created and not started.called:
            _remove_new_output(out, made)
        elif made and not (out / LEDGER_NAME).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _remove_new_output(out: Path, made: bool) -> None:
    """Everything a new campaign's set-up wrote, removed (the engine never started).

    An output directory given empty was checked to hold nothing but the lock files
    (under the lock), so all else in it is this run's.
    """
    if made:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in out.iterdir():
        if entry.name in (LOCK_NAME, LEASE_NAME):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


class _Started:
    """Notes that the engine has started (and tells the caller's ``on_start``)."""

    def __init__(self, then: Callable[[], None] | None) -> None:
        self.then = then
        self.called = False

    def __call__(self) -> None:
        self.called = True
        if self.then is not None:
            self.then()


def _continue(prepared: PreparedRun, options: DriverOptions) -> RunResult:
    out = prepared.output
    # The lock first: opening the ledger read-write may change it (journal mode,
    # upgrades of an older ledger), and only the one driver may change it.
    with campaign_lock(out):
        ledger = open_campaign(out)
        try:
            for sub in output_dirs(prepared.spec):
                (out / sub).mkdir(parents=True, exist_ok=True)
            return drive(ledger, prepared, **options)
        finally:
            ledger.close()


def create_output(spec: CampaignSpec | ChainSpec, output: Path, site: SiteSpec) -> Ledger:
    """The output directory's folders and ledger; on failure, nothing is left behind.

    The caller holds the campaign lock on ``output`` (which exists).
    """
    check_new_output(output)  # again, under the lock: another submit may have won
    made: list[Path] = []
    try:
        for sub in output_dirs(spec):
            top = output / sub.split("/")[0]
            if not top.exists():
                made.append(top)
            (output / sub).mkdir(parents=True)
        meta = {
            "campaign": spec.to_json(),
            "site": site.name,
            "site_spec": site.model_dump_json(by_alias=True),
            "parsl_es_version": __version__,
        }
        if isinstance(spec, ChainSpec):
            steps = {step.name: step.plan for step in spec.step_plans() if step.name}
            return Ledger.create(output / LEDGER_NAME, meta, steps=steps)
        return Ledger.create(output / LEDGER_NAME, meta, spec.plan)
    except BaseException as exc:  # a full disk, or a Ctrl-C half-way
        for suffix in ("", "-wal", "-shm", "-journal"):
            (output / (LEDGER_NAME + suffix)).unlink(missing_ok=True)
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        if isinstance(exc, OSError):
            raise UserError(f"cannot create the campaign's output: {exc}", file=output) from None
        raise


# --- blocking, in one call ---------------------------------------------------------------------


def run_campaign(
    campaign: Campaign,
    output: str | Path | None = None,
    *,
    site: Site = "local",
    overrides: list[str] | None = None,
    **options: Unpack[DriverOptions],
) -> RunResult:
    """Start a new campaign and run it to completion (or until stopped): prepare + execute."""
    prepared = prepare(
        campaign, output, site=site, overrides=overrides, session=options.get("session")
    )
    return execute(prepared, **options)


def resume_campaign(
    output: str | Path,
    *,
    site: Site | None = None,
    overrides: list[str] | None = None,
    **options: Unpack[DriverOptions],
) -> RunResult:
    """Continue a campaign from its ledger, re-running only what is not done."""
    prepared = prepare_resume(
        output, site=site, overrides=overrides, session=options.get("session")
    )
    return execute(prepared, **options)
