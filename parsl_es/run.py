"""Running a campaign: check every input first, then create the output, then drive.

Everything a user can get wrong (campaign, site, steps, output directory) is
checked before anything is written, so bad input leaves no half-made output
directory behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TypedDict, Unpack

from parsl_es import __version__
from parsl_es.backends.base import Backend
from parsl_es.campaign import CampaignSpec, as_campaign
from parsl_es.engine.dispatcher import Dispatcher, Settings
from parsl_es.engine.result import Progress, RunResult
from parsl_es.engine.steps import Placement
from parsl_es.engine.timeouts import TimeoutPolicy
from parsl_es.errors import UserError, allowed
from parsl_es.fileio import write_text_atomic
from parsl_es.ledger import LEDGER_NAME, Ledger
from parsl_es.lock import LOCK_NAME, campaign_lock
from parsl_es.sites import SiteSpec, check_site, load_site

log = logging.getLogger("parsl_es")

OUTPUT_DIRS = ("ranges", "merged", "validation", "logs")
#: Parsl's monitoring database, when monitoring is on.
MONITORING_DB = "monitoring.db"
#: Ranges that would end closer than this to the allocation's end are not started.
DEFAULT_MARGIN_SECONDS = 300.0


def resolve_steps(spec: CampaignSpec, site: SiteSpec, source: str = "campaign") -> Placement:
    """The node types for each step: the campaign's choice, else the site's default."""
    known = site.node_types
    simulate = spec.steps.simulate or site.steps.simulate
    merge = spec.steps.merge or site.steps.merge
    validate = spec.steps.validate_ or site.steps.validate_
    for step, names in (("simulate", simulate), ("merge", [merge]), ("validate", [validate])):
        for name in names:
            if name not in known:
                raise UserError(
                    f"node type '{name}' is not in site '{site.name}'; allowed: {allowed(known)}",
                    file=source,
                    field=f"steps.{step}",
                )
    return Placement(simulate=list(dict.fromkeys(simulate)), merge=merge, validate=validate)


def require_usable(site: SiteSpec) -> None:
    """Refuse a site that cannot start here (no account, no sbatch, ...), before writing."""
    problems, _ = check_site(site)
    if problems:
        more = f" (and {len(problems) - 1} more: es-run sites check)" if len(problems) > 1 else ""
        raise UserError(f"site '{site.name}' is not ready: {problems[0]}{more}")


def preflight(spec: CampaignSpec, source: str | Path | None = None) -> None:
    """Refuse a campaign whose payload can already tell it cannot run (e.g. no executable)."""
    from parsl_es.apps import worker_payload

    problems = worker_payload(spec.payload.name, spec.payload.params, setup=False)[0].preflight()
    if problems:
        field, message = next(iter(problems.items()))
        raise UserError(message, file=source, field=f"payload.{field}")


def check_new_output(output: Path) -> None:
    """Refuse an output directory that cannot be written or holds other work."""
    if (output / LEDGER_NAME).exists():
        raise UserError(
            f"already holds a campaign; continue it with 'es-run resume {output}' "
            "or choose another --output",
            file=output,
        )
    if output.exists():
        if not output.is_dir():
            raise UserError("output exists and is not a directory", file=output)
        if any(p.name != LOCK_NAME for p in output.iterdir()):
            raise UserError("output directory is not empty; choose a new one", file=output)
        target = output
    else:
        target = next(p for p in [output, *output.parents] if p.exists())
        if not target.is_dir():
            raise UserError(
                f"cannot create output directory: {target} is not a directory", file=output
            )
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"output directory is not writable ({target})", file=output)


def create_output(spec: CampaignSpec, output: Path, site: SiteSpec) -> Ledger:
    """The output directory's folders and ledger; on failure, nothing is left behind.

    The caller holds the campaign lock on ``output`` (which exists).
    """
    check_new_output(output)  # again, under the lock: another submit may have won
    made: list[Path] = []
    try:
        for sub in OUTPUT_DIRS:
            (output / sub).mkdir()
            made.append(output / sub)
        meta = {
            "campaign": spec.to_json(),
            "site": site.name,
            "site_spec": site.model_dump_json(by_alias=True),
            "parsl_es_version": __version__,
        }
        return Ledger.create(output / LEDGER_NAME, meta, spec.plan)
    except OSError as exc:
        for suffix in ("", "-wal", "-shm", "-journal"):
            (output / (LEDGER_NAME + suffix)).unlink(missing_ok=True)
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        raise UserError(f"cannot create the campaign's output: {exc}", file=output) from None


def output_for(spec: CampaignSpec, output: str | Path | None) -> Path:
    if output is not None:
        return Path(output)
    if spec.output:
        return Path(spec.output)
    raise UserError("no output directory: give --output DIR or an 'output' key", field="output")


class DriverLog:
    """The driver's own log, ``logs/driver.log``, for the duration of a run."""

    def __init__(self, output: Path) -> None:
        self.handler = logging.FileHandler(output / "logs" / "driver.log")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )

    def __enter__(self) -> DriverLog:
        log.addHandler(self.handler)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)
        return self

    def __exit__(self, *_: object) -> None:
        log.removeHandler(self.handler)
        self.handler.close()


class DriverOptions(TypedDict, total=False):
    """How a run is driven; the same for a new campaign and a resumed one."""

    session: Backend | None  # a loaded backend to run on (else the site is loaded here)
    on_progress: Callable[[Progress], None] | None
    stop: threading.Event | None
    bundle_size: int | None
    allocation_end: float | None
    margin_seconds: float
    monitoring: bool  # Parsl's MonitoringHub, database OUTPUT/monitoring.db (own session only)


def drive(
    ledger: Ledger, output: Path, site: SiteSpec, **options: Unpack[DriverOptions]
) -> RunResult:
    """Run the engine on a (new or resumed) campaign output directory."""
    spec = CampaignSpec.model_validate(ledger.campaign_json())
    placement = resolve_steps(spec, site)
    backend = options.get("session")
    own_backend = backend is None
    with DriverLog(output):
        log.info("campaign %s on site %s: %s", spec.name, site.name, placement)
        if options.get("allocation_end"):
            log.info("allocation ends at %s", time.ctime(options["allocation_end"]))
        if backend is None:
            from parsl_es.backends.parsl import ParslBackend

            monitoring_db = output / MONITORING_DB if options.get("monitoring") else None
            backend = ParslBackend(site, output / "logs" / "parsl", monitoring_db=monitoring_db)
        elif options.get("monitoring") and getattr(backend, "monitoring_db", None) is None:
            log.warning("monitoring is set when a site is loaded; this session was loaded without")
        timeouts = spec.range_timeout
        settings = Settings(
            attempts=spec.attempts,
            timeouts=TimeoutPolicy(
                factor=timeouts.factor,
                floor=timeouts.floor_seconds,
                ceiling=timeouts.ceiling_seconds,
            ),
            bundle_size=options.get("bundle_size"),
            allocation_end=options.get("allocation_end"),
            margin_seconds=options.get("margin_seconds", DEFAULT_MARGIN_SECONDS),
        )
        try:
            result = Dispatcher(
                ledger=ledger,
                backend=backend,
                output_dir=output,
                payload=(spec.payload.name, spec.payload.params),
                placement=placement,
                settings=settings,
                on_progress=options.get("on_progress"),
                stop=options.get("stop"),
            ).run()
        finally:
            if own_backend:
                backend.close()
        log.info("run finished: %s", result.message)
    _write_run_record(output, result)
    return result


def _write_run_record(output: Path, result: RunResult) -> None:
    record = asdict(result) | {"events_per_second": result.events_per_second, "at": time.time()}
    n = len(list((output / "logs").glob("run-*.json"))) + 1
    try:
        write_text_atomic(output / "logs" / f"run-{n:03d}.json", json.dumps(record, indent=1))
    except OSError as exc:  # e.g. the disk is full: the ledger already holds the truth
        log.error("could not write the run record: %s", exc)


def submit(
    campaign: str | Path | dict | CampaignSpec,
    output: str | Path | None = None,
    *,
    site: str | Path | SiteSpec = "local",
    **options: Unpack[DriverOptions],
) -> RunResult:
    """Start a new campaign and run it to completion (or until stopped)."""
    spec = as_campaign(campaign)
    session = options.get("session")
    if session is not None:
        site_spec = session.site
    else:
        site_spec = site if isinstance(site, SiteSpec) else load_site(site)
    resolve_steps(spec, site_spec)
    if session is None:
        require_usable(site_spec)
    preflight(spec)
    out = output_for(spec, output)
    check_new_output(out)
    made = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory: {exc.strerror}", file=out) from None
    try:
        with campaign_lock(out):
            ledger = create_output(spec, out, site_spec)
            try:
                return drive(ledger, out, site_spec, **options)
            finally:
                ledger.close()
    except UserError:
        if made and not (out / LEDGER_NAME).exists():
            shutil.rmtree(out, ignore_errors=True)  # bad input writes nothing
        raise


def recorded_site(ledger: Ledger) -> SiteSpec:
    """The site (with its overrides) that the campaign was submitted with."""
    raw = ledger.meta("site_spec")
    if raw is None:
        return load_site(ledger.meta("site") or "local")
    return SiteSpec.model_validate_json(raw)


def open_campaign(output: str | Path, readonly: bool = False) -> Ledger:
    out = Path(output)
    if not out.is_dir():
        raise UserError("no such campaign output directory", file=out)
    return Ledger.open(out / LEDGER_NAME, readonly=readonly)


def resume(
    output: str | Path,
    *,
    site: str | Path | SiteSpec | None = None,
    **options: Unpack[DriverOptions],
) -> RunResult:
    """Continue a campaign from its ledger, re-running only what is not done."""
    out = Path(output)
    ledger = open_campaign(out)
    try:
        session = options.get("session")
        if session is not None:
            site_spec = session.site
        elif isinstance(site, SiteSpec):
            site_spec = site
        elif site is not None:
            site_spec = load_site(site)
        else:
            site_spec = recorded_site(ledger)
        if session is None:
            require_usable(site_spec)
        with campaign_lock(out):
            for sub in OUTPUT_DIRS:
                (out / sub).mkdir(exist_ok=True)
            return drive(ledger, out, site_spec, **options)
    finally:
        ledger.close()
