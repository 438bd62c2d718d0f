"""Sites: a named YAML file that maps node types to Parsl executors.

A site has one HighThroughputExecutor per node type (labelled with the node
type's name) and says which node types run each step by default. ``local`` is
the default: one executor with a LocalProvider on 127.0.0.1 and as many workers
as there are cores, nothing to install.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parsl_es.errors import UserError, allowed, did_you_mean
from parsl_es.yamlfile import parse_mapping, read_text, validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalProviderSpec(_Strict):
    """Workers on the machine that runs the driver (no batch system)."""

    kind: Literal["local"] = "local"
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    worker_init: str = ""


class NodeTypeSpec(_Strict):
    """One kind of node and the HighThroughputExecutor that runs on it."""

    description: str = ""
    provider: LocalProviderSpec = LocalProviderSpec()
    workers_per_node: int | Literal["auto"] = "auto"
    cores_per_worker: float = Field(1.0, gt=0)
    max_workers_per_node: int | None = Field(None, ge=1)
    heartbeat_period: int = Field(2, ge=1)
    heartbeat_threshold: int = Field(10, ge=2)
    address: str = "127.0.0.1"

    @field_validator("workers_per_node")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v

    def workers(self) -> int:
        """Workers per node: 'auto' means the cores this process may use."""
        if self.workers_per_node != "auto":
            return int(self.workers_per_node)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return max(1, int((cores or 1) // self.cores_per_worker))


class SiteSteps(_Strict):
    simulate: list[str]
    merge: str
    validate_: str = Field(alias="validate")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("simulate", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class SiteSpec(_Strict):
    name: str
    description: str = ""
    node_types: dict[str, NodeTypeSpec] = Field(min_length=1)
    steps: SiteSteps
    strategy_period: float = Field(0.5, gt=0)
    in_flight_per_worker: float = Field(
        2.0, ge=1.0, description="ranges kept in flight per connected worker (prefetch)"
    )

    def model_post_init(self, _: Any) -> None:
        known = set(self.node_types)
        for step, names in (
            ("simulate", self.steps.simulate),
            ("merge", [self.steps.merge]),
            ("validate", [self.steps.validate_]),
        ):
            for n in names:
                if n not in known:
                    raise ValueError(
                        f"steps.{step}: unknown node type '{n}'{did_you_mean(n, known)}; "
                        f"allowed: {allowed(known)}"
                    )


def shipped_sites() -> dict[str, Path]:
    root = resources.files("parsl_es.site_configs")
    return {
        Path(e.name).stem: Path(str(e))
        for e in root.iterdir()
        if e.name.endswith((".yaml", ".yml"))
    }


def resolve_site_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or "/" in text or path.exists():
        return path
    sites = shipped_sites()
    if text in sites:
        return sites[text]
    raise UserError(
        f"unknown site '{text}'{did_you_mean(text, sites)}; shipped sites: {allowed(sites)} "
        "(or give the path of a site file)"
    )


def load_site(name_or_path: str | Path = "local") -> SiteSpec:
    path = resolve_site_path(name_or_path)
    text = read_text(path, "site file")
    data, lines = parse_mapping(text, path, "site file")
    try:
        return SiteSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, SiteSpec, path, lines) from None


def build_config(site: SiteSpec, run_dir: Path, node_types: list[str] | None = None) -> Any:
    """The ``parsl.Config`` of a site: one HighThroughputExecutor per node type."""
    import logging

    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.launchers import SingleNodeLauncher
    from parsl.logconfigs.file import FileLogging
    from parsl.providers import LocalProvider

    _put_environment_on_path()
    executors = []
    for label, nt in site.node_types.items():
        if node_types is not None and label not in node_types:
            continue
        p = nt.provider
        provider = LocalProvider(
            init_blocks=p.init_blocks,
            min_blocks=p.min_blocks,
            max_blocks=p.max_blocks,
            worker_init=p.worker_init,
            launcher=SingleNodeLauncher(),
        )
        executors.append(
            HighThroughputExecutor(
                label=label,
                address=nt.address,
                loopback_address="127.0.0.1",
                provider=provider,
                max_workers_per_node=nt.max_workers_per_node or nt.workers(),
                cores_per_worker=nt.cores_per_worker,
                heartbeat_period=nt.heartbeat_period,
                heartbeat_threshold=nt.heartbeat_threshold,
                poll_period=10,
                worker_logdir_root=str(run_dir / "workers"),
                block_error_handler=False,
                encrypted=False,
                interchange_launch_cmd=_interchange_cmd(),
            )
        )
    return Config(
        executors=executors,
        run_dir=str(run_dir),
        strategy="simple",
        strategy_period=site.strategy_period,
        retries=0,
        initialize_logging=FileLogging(level=logging.INFO),
    )


def _interchange_cmd() -> list[str]:
    """Start the interchange in its own session, out of the terminal's process group.

    Ctrl-C in a terminal signals the whole foreground process group: the
    interchange would die with the driver's SIGINT, losing the results of the
    ranges in flight that a graceful stop wants to keep. (Worker pools are
    already started in their own process group by Parsl's providers.) ``setsid``
    execs in place, so Parsl still holds the interchange's PID.
    """
    setsid = shutil.which("setsid")
    return [setsid, "interchange.py"] if setsid else ["interchange.py"]


def _put_environment_on_path() -> None:
    """HTEX starts ``interchange.py`` and ``process_worker_pool.py`` from PATH.

    Put this interpreter's ``bin`` first so an unactivated virtual environment works.
    """
    bindir = str(Path(sys.executable).parent)
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[:1] != [bindir]:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in parts if p != bindir]])
