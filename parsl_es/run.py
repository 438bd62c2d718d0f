"""The engine's side of the seam: ``drive`` runs the engine on a campaign output directory.

The front ends (``parsl_es.api``: es-run, notebooks, remote submission) check
every input once (a ``PreparedRun``) and create or lock the output; then they call
``drive(ledger, prepared, **options)``, which runs the engine and writes the
driver's log and the run record. This module keeps only what that call needs (and the small
ledger helpers both sides read), so the engine never imports a front end.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from pydantic import ValidationError

from parsl_es.backends.base import Backend
from parsl_es.campaign import CampaignSpec
from parsl_es.chain import ChainSpec
from parsl_es.dataset_plan import DatasetPlan
from parsl_es.engine.dispatcher import Dispatcher, Settings, Stage
from parsl_es.engine.result import Progress, RunResult
from parsl_es.engine.steps import Placement
from parsl_es.engine.timeouts import TimeoutPolicy
from parsl_es.errors import UserError, allowed
from parsl_es.fileio import write_text_atomic
from parsl_es.ledger import Ledger
from parsl_es.sites import SiteSpec, load_site
from parsl_es.yamlfile import validation_error

log = logging.getLogger("parsl_es")

OUTPUT_DIRS = ("ranges", "merged", "validation", "logs")
#: What each step of a chain has of its own, in ``OUTPUT/<step>/``.
STEP_DIRS = ("ranges", "merged", "validation")


def output_dirs(spec: CampaignSpec | ChainSpec) -> list[str]:
    """The folders of a campaign's output: a chain's steps each have theirs."""
    if isinstance(spec, ChainSpec):
        return ["logs", *(f"{step}/{d}" for step in spec.chain for d in STEP_DIRS)]
    return list(OUTPUT_DIRS)


def spec_from_json(data: dict) -> CampaignSpec | ChainSpec:
    """The campaign a ledger recorded (a chain's has its ``chain``)."""
    model = ChainSpec if "chain" in data else CampaignSpec
    return model.model_validate(data)


def recorded_spec(ledger: Ledger) -> CampaignSpec | ChainSpec:
    """The campaign as submitted, a chain with the dataset its first step counted."""
    spec = spec_from_json(ledger.campaign_json())
    if isinstance(spec, ChainSpec) and spec.dataset_spec is not None:
        plan = ledger.step(spec.step_names[0]).plan
        assert isinstance(plan, DatasetPlan)
        spec = spec.with_dataset(plan.files)
    return spec


#: Parsl's monitoring database, when monitoring is on.
MONITORING_DB = "monitoring.db"
#: Ranges that would end closer than this to the allocation's end are not started.
DEFAULT_MARGIN_SECONDS = 300.0


def resolve_stages(
    spec: CampaignSpec | ChainSpec, site: SiteSpec, source: str = "campaign"
) -> tuple[Stage, ...]:
    """Each step with the node types that run it: the campaign's choice, else the site's.

    A chain step's ``node_types`` (in preference order) process its ranges; its
    merges and validations run where the campaign's ``steps`` or the site say.
    """
    known = site.node_types
    merge = spec.steps.merge or site.steps.merge
    validate = spec.steps.validate_ or site.steps.validate_
    stages = []
    for step in spec.step_plans():
        chosen = spec.steps.simulate if step.name is None else step.node_types
        simulate = list(chosen or site.steps.simulate)
        at = "steps.simulate" if step.name is None else f"chain.{step.name}.node_types"
        for field, names in (
            (at, simulate),
            ("steps.merge", [merge]),
            ("steps.validate", [validate]),
        ):
            for name in names:
                if name not in known:
                    raise UserError(
                        f"node type '{name}' is not in site '{site.name}'; "
                        f"allowed: {allowed(known)}",
                        file=source,
                        field=field,
                    )
        placement = Placement(
            simulate=list(dict.fromkeys(simulate)), merge=merge, validate=validate
        )
        stages.append(Stage(step, placement))
    return tuple(stages)


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
    #: Called once set-up is over (site loaded, ledger open), as the engine starts:
    #: from then on a stop request is graceful (es-run's first Ctrl-C).
    on_start: Callable[[], None] | None
    on_progress: Callable[[Progress], None] | None
    stop: threading.Event | None
    bundle_size: int | None
    allocation_end: float | None
    margin_seconds: float
    monitoring: bool  # Parsl's MonitoringHub, database OUTPUT/monitoring.db (own session only)


@dataclass(frozen=True)
class PreparedRun:
    """A run whose every input has been checked; nothing written yet."""

    spec: CampaignSpec | ChainSpec
    site: SiteSpec
    stages: tuple[Stage, ...]  # every step with its node types, resolved against the site
    output: Path
    source: str | None = None  # the campaign file, when it came from one
    resume: bool = False


def drive(ledger: Ledger, prepared: PreparedRun, **options: Unpack[DriverOptions]) -> RunResult:
    """Run the engine on a (new or resumed) campaign output directory.

    Every input was checked once by ``api.prepare``; nothing is checked again here.
    """
    spec, site, stages, output = (
        prepared.spec,
        prepared.site,
        prepared.stages,
        prepared.output,
    )
    backend = options.get("session")
    own_backend = backend is None
    with DriverLog(output):
        for stage in stages:
            log.info(
                "campaign %s (%s) on site %s: %s",
                spec.name,
                stage.plan.label,
                site.name,
                stage.placement,
            )
        if options.get("allocation_end"):
            log.info("allocation ends at %s", time.ctime(options["allocation_end"]))
        if backend is None:
            from parsl_es.backends.parsl import ParslBackend

            monitoring_db = output / MONITORING_DB if options.get("monitoring") else None
            backend = ParslBackend(site, output / "logs" / "parsl", monitoring_db=monitoring_db)
        elif options.get("monitoring") and getattr(backend, "monitoring_db", None) is None:
            log.warning("monitoring is set when a site is loaded; this session was loaded without")
        try:
            if options.get("on_start"):
                options["on_start"]()
            result = Dispatcher(
                ledger=ledger,
                backend=backend,
                output_dir=output,
                stages=stages,
                settings=_settings(spec, options),
                on_progress=options.get("on_progress"),
                stop=options.get("stop"),
            ).run()
        finally:
            if own_backend:
                backend.close()
        log.info("run finished: %s", result.message)
    _write_run_record(output, result)
    return result


def _settings(spec: CampaignSpec | ChainSpec, options: DriverOptions) -> Settings:
    timeouts = spec.range_timeout
    return Settings(
        attempts=spec.attempts,
        timeouts=TimeoutPolicy(
            factor=timeouts.factor,
            floor=timeouts.floor_seconds,
            ceiling=timeouts.ceiling_seconds,
            slack=timeouts.slack_seconds,
        ),
        bundle_size=options.get("bundle_size"),
        allocation_end=options.get("allocation_end"),
        margin_seconds=options.get("margin_seconds", DEFAULT_MARGIN_SECONDS),
    )


def _write_run_record(output: Path, result: RunResult) -> None:
    record = asdict(result) | {"events_per_second": result.events_per_second, "at": time.time()}
    n = len(list((output / "logs").glob("run-*.json"))) + 1
    try:
        write_text_atomic(output / "logs" / f"run-{n:03d}.json", json.dumps(record, indent=1))
    except OSError as exc:  # e.g. the disk is full: the ledger already holds the truth
        log.error("could not write the run record: %s", exc)


def recorded_site(ledger: Ledger) -> SiteSpec:
    """The site (with its overrides) that the campaign was submitted with."""
    raw = ledger.meta("site_spec")
    if raw is None:
        return load_site(ledger.meta("site") or "local")
    try:
        return SiteSpec.model_validate_json(raw)
    except ValidationError as exc:  # recorded by an older parsl-es, with laxer checks
        error = validation_error(exc, SiteSpec, f"{ledger.path} (its recorded site)", {})
        raise UserError(f"{error.message}; resume it with --site SITE", file=error.file) from None
