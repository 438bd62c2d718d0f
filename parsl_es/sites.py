"""Sites: a named YAML file that maps node types to Parsl executors.

A site has one HighThroughputExecutor per node type (labelled with the node
type's name: ``cpu``, ``gpu``, ...), each with its provider (the machine the
driver runs on, or Slurm), launcher, workers and accelerators, and says which
node types run each step by default. ``local`` is the default: one executor with
a LocalProvider on 127.0.0.1 and as many workers as there are cores.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from parsl_es.containers import ContainerSpec, container_argv
from parsl_es.errors import UserError, allowed, did_you_mean
from parsl_es.yamlfile import parse_mapping, read_text, validation_error

WALLTIME = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)$")


def walltime_seconds(text: str) -> int:
    """Seconds in a Slurm walltime ``[D-]HH:MM:SS``."""
    m = WALLTIME.match(text)
    if not m:
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM:SS")
    days, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((days * 24 + h) * 60 + mi) * 60 + s


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LauncherSpec(_Strict):
    """How the worker pool is started inside a block."""

    kind: Literal["srun", "simple", "single_node"] = "srun"
    overrides: str = Field("", description="extra srun options (srun only)")


class LocalProviderSpec(_Strict):
    """Workers on the machine that runs the driver (no batch system)."""

    kind: Literal["local"] = "local"
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    worker_init: str = ""


class SlurmProviderSpec(_Strict):
    """Blocks are Slurm batch jobs; every field maps to an sbatch option."""

    kind: Literal["slurm"]
    partition: str | None = None
    account: str | None = None
    account_required: bool = Field(False, description="this site refuses jobs without --account")
    qos: str | None = None
    constraint: str | None = None
    clusters: str | None = None
    nodes_per_block: int = Field(1, ge=1)
    cores_per_node: int | None = Field(None, ge=1)
    mem_per_node: int | None = Field(None, ge=1, description="GB")
    gpus_per_node: int | None = Field(None, ge=1)
    gres: str | None = None
    init_blocks: int = Field(1, ge=0)
    min_blocks: int = Field(0, ge=0)
    max_blocks: int = Field(1, ge=1)
    parallelism: float = Field(1.0, gt=0, le=1)
    walltime: str = "01:00:00"
    exclusive: bool = True
    scheduler_options: list[str] = Field(
        default_factory=list, description="extra '#SBATCH ...' lines"
    )
    worker_init: str = ""
    launcher: LauncherSpec = LauncherSpec()
    cmd_timeout: int = Field(60, ge=1)

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        walltime_seconds(v)
        return v

    @field_validator("scheduler_options", mode="before")
    @classmethod
    def _lines(cls, v: Any) -> Any:
        return v.splitlines() if isinstance(v, str) else v


class GlobusComputeSpec(_Strict):
    """Tasks of this node type go to a Globus Compute endpoint (Parsl's GlobusComputeExecutor).

    For steps that belong elsewhere: merges at a site with the storage, say. The
    endpoint runs them with its own configuration; ``workers`` is how many tasks
    to keep in flight there.
    """

    kind: Literal["globus-compute"]
    endpoint_id: str = Field(pattern=r"^[0-9a-fA-F-]{36}$")
    workers: int = Field(4, ge=1)
    init_blocks: int = 1


ProviderSpec = Annotated[
    LocalProviderSpec | SlurmProviderSpec | GlobusComputeSpec, Field(discriminator="kind")
]


class NodeTypeSpec(_Strict):
    """One kind of node and the HighThroughputExecutor that runs on it."""

    description: str = ""
    provider: ProviderSpec = LocalProviderSpec()
    workers_per_node: int | Literal["auto"] = "auto"
    cores_per_worker: float = Field(1.0, gt=0)
    accelerators: int | list[str] = Field(
        0, description="GPUs per node: a count or device ids; one worker per accelerator"
    )
    prefetch_per_worker: float = Field(
        1.0,
        ge=0,
        description="tasks a worker pool holds beyond its free workers, per worker: the next "
        "bundle is there when a worker finishes, not a round trip to the interchange away",
    )
    heartbeat_period: int = Field(5, ge=1)
    heartbeat_threshold: int = Field(20, ge=2)
    drain_margin_seconds: int = Field(
        300, ge=0, description="workers stop taking ranges this long before a block's walltime"
    )
    address: str = Field(
        "127.0.0.1",
        description="where workers reach the driver: an address, 'hostname', or "
        "'interface:NAME' (e.g. interface:hsn0 on Perlmutter)",
    )
    container: ContainerSpec | None = None

    @field_validator("workers_per_node")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v

    @field_validator("accelerators")
    @classmethod
    def _accelerators(cls, v: int | list[str]) -> int | list[str]:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0")
        return v

    @property
    def accelerator_ids(self) -> list[str]:
        if isinstance(self.accelerators, int):
            return [str(i) for i in range(self.accelerators)]
        return list(self.accelerators)

    def workers(self) -> int:
        """Workers per node: explicit, one per accelerator, or cores / cores_per_worker."""
        if isinstance(self.provider, GlobusComputeSpec):
            return self.provider.workers
        if self.workers_per_node != "auto":
            n = int(self.workers_per_node)
        else:
            cores = getattr(self.provider, "cores_per_node", None) or _local_cores()
            n = max(1, int(cores // self.cores_per_worker))
        if self.accelerator_ids:
            n = min(n, len(self.accelerator_ids))
        return n

    def expected_workers(self) -> int:
        """Workers expected once the initial blocks are up (before any connect)."""
        p = self.provider
        nodes = getattr(p, "nodes_per_block", 1)
        return self.workers() * nodes * max(1, p.init_blocks)


def _local_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SiteSteps(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    simulate: list[str]
    merge: str
    validate_: str = Field(alias="validate")

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
        for name in known:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise ValueError(f"node type name '{name}': letters, digits, _ and - only")


# --- finding and loading sites ------------------------------------------------


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


def load_site(name_or_path: str | Path = "local", overrides: list[str] | None = None) -> SiteSpec:
    """Load a site by name or path, with ``--set key=value`` overrides applied."""
    path = resolve_site_path(name_or_path)
    text = read_text(path, "site file")
    data, lines = parse_mapping(text, path, "site file")
    for item in overrides or []:
        apply_override(data, item, path)
    try:
        return SiteSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, SiteSpec, path, lines) from None


def apply_override(data: dict[str, Any], item: str, source: Path | str) -> None:
    """Apply one ``key=value`` to raw site data.

    ``node_types.gpu.provider.qos=debug`` sets one field; ``gpu.qos=debug``
    is the same with the node type first; a bare ``account=m1234`` sets the
    field wherever it applies: at the top of the site, or in every node type
    or its provider that has it. Values are YAML (``max_blocks=4`` is a number).
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {item!r}: expected KEY=VALUE", file=source)
    value = yaml.safe_load(raw) if raw.strip() else None
    parts = key.split(".")
    node_types = data.get("node_types") or {}
    if parts[0] in node_types and len(parts) > 1:
        parts = ["node_types", *parts]
    if (
        len(parts) == 3
        and parts[0] == "node_types"
        and parts[2] not in NodeTypeSpec.model_fields
        and parts[2] in SlurmProviderSpec.model_fields
    ):
        parts.insert(2, "provider")  # gpu.qos=debug: a provider field of node type gpu
    if len(parts) > 1:
        _set_path(data, parts, value, item, source)
        return
    targets = []
    if key in SiteSpec.model_fields:
        targets.append(data)
    for nt in node_types.values():
        if not isinstance(nt, dict):
            continue
        if key in NodeTypeSpec.model_fields:
            targets.append(nt)
        else:
            provider = nt.setdefault("provider", {})
            kind = provider.get("kind", "local")
            model = SlurmProviderSpec if kind == "slurm" else LocalProviderSpec
            if key in model.model_fields:
                targets.append(provider)
    if not targets:
        fields = {
            *SiteSpec.model_fields,
            *NodeTypeSpec.model_fields,
            *SlurmProviderSpec.model_fields,
        }
        raise UserError(f"--set {key}: no such site field{did_you_mean(key, fields)}", file=source)
    for target in targets:
        target[key] = value


def _set_path(data: dict, parts: list[str], value: Any, item: str, source: Path | str) -> None:
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise UserError(f"--set {item}: '{part}' is not a mapping", file=source)
        node = nxt
    node[parts[-1]] = value


# --- checking a site before use ------------------------------------------------


def check_site(site: SiteSpec) -> tuple[list[str], list[str]]:
    """What stops this site from running here (problems), and what looks risky (warnings)."""
    problems: list[str] = []
    warnings: list[str] = []
    uses_slurm = False
    for name, nt in site.node_types.items():
        p = nt.provider
        if isinstance(p, SlurmProviderSpec):
            uses_slurm = True
            if p.account_required and not p.account:
                problems.append(
                    f"node type {name}: provider.account is not set and this site requires one "
                    f"(--set account=YOUR_ACCOUNT)"
                )
            if not p.worker_init:
                warnings.append(
                    f"node type {name}: no worker_init; the batch job must find this Python "
                    f"environment ({Path(sys.executable).parent}) on its own"
                )
            if nt.drain_margin_seconds >= walltime_seconds(p.walltime):
                problems.append(
                    f"node type {name}: drain_margin_seconds ({nt.drain_margin_seconds}) is not "
                    f"shorter than the walltime ({p.walltime})"
                )
        if isinstance(p, GlobusComputeSpec):
            try:
                import globus_compute_sdk  # noqa: F401
            except ImportError:
                problems.append(
                    f"node type {name}: Globus Compute SDK not installed "
                    "(pip install 'parsl-es[globus]')"
                )
        if nt.container and not shutil.which(nt.container.runtime):
            warnings.append(
                f"node type {name}: container runtime '{nt.container.runtime}' is not on PATH here"
            )
        if nt.address.startswith("interface:"):
            try:
                resolve_address(nt.address)
            except UserError as exc:
                problems.append(f"node type {name}: {exc.message}")
    if uses_slurm:
        for tool in ("sbatch", "squeue", "scancel"):
            if not shutil.which(tool):
                problems.append(f"'{tool}' is not on PATH: Slurm node types cannot start blocks")
    return problems, warnings


def resolve_address(address: str) -> str:
    """The address workers connect to: literal, this host's name, or an interface's."""
    from parsl.addresses import address_by_hostname, address_by_interface

    if address == "hostname":
        return address_by_hostname()
    if address.startswith("interface:"):
        ifname = address.split(":", 1)[1]
        try:
            return address_by_interface(ifname)
        except OSError:
            raise UserError(f"address: no network interface '{ifname}' on this host") from None
    return address


# --- building the Parsl configuration --------------------------------------------


def _launcher(spec: LauncherSpec) -> Any:
    from parsl.launchers import SimpleLauncher, SingleNodeLauncher, SrunLauncher

    if spec.kind == "srun":
        return SrunLauncher(overrides=spec.overrides)
    if spec.kind == "simple":
        return SimpleLauncher()
    return SingleNodeLauncher()


def _provider(nt: NodeTypeSpec) -> Any:
    from parsl.launchers import SingleNodeLauncher
    from parsl.providers import LocalProvider, SlurmProvider

    p = nt.provider
    if isinstance(p, LocalProviderSpec):
        return LocalProvider(
            init_blocks=p.init_blocks,
            min_blocks=p.min_blocks,
            max_blocks=p.max_blocks,
            worker_init=p.worker_init,
            launcher=SingleNodeLauncher(),
        )
    return SlurmProvider(
        partition=p.partition,
        account=p.account,
        qos=p.qos,
        constraint=p.constraint,
        clusters=p.clusters,
        nodes_per_block=p.nodes_per_block,
        cores_per_node=p.cores_per_node,
        mem_per_node=p.mem_per_node,
        gpus_per_node=p.gpus_per_node,
        gres=p.gres,
        init_blocks=p.init_blocks,
        min_blocks=p.min_blocks,
        max_blocks=p.max_blocks,
        parallelism=p.parallelism,
        walltime=p.walltime,
        scheduler_options="\n".join(p.scheduler_options),
        worker_init=p.worker_init,
        cmd_timeout=p.cmd_timeout,
        exclusive=p.exclusive,
        launcher=_launcher(p.launcher),
    )


def _launch_cmd(nt: NodeTypeSpec) -> str | None:
    """The worker pool's command line, inside the node type's container if it has one."""
    if nt.container is None:
        return None
    import shlex

    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD

    return shlex.join(container_argv(nt.container)) + " " + DEFAULT_LAUNCH_CMD


def _drain_period(nt: NodeTypeSpec) -> int | None:
    """Workers stop taking work this long after their block starts (None: never)."""
    p = nt.provider
    if isinstance(p, SlurmProviderSpec):
        return max(1, walltime_seconds(p.walltime) - nt.drain_margin_seconds)
    return None


def build_executor(label: str, nt: NodeTypeSpec, run_dir: Path) -> Any:
    from parsl.executors import HighThroughputExecutor

    if isinstance(nt.provider, GlobusComputeSpec):
        return _globus_compute_executor(label, nt.provider)

    kwargs: dict[str, Any] = {}
    launch_cmd = _launch_cmd(nt)
    if launch_cmd:
        kwargs["launch_cmd"] = launch_cmd
    return HighThroughputExecutor(
        label=label,
        address=resolve_address(nt.address),
        loopback_address="127.0.0.1",
        provider=_provider(nt),
        max_workers_per_node=nt.workers(),
        cores_per_worker=nt.cores_per_worker,
        prefetch_capacity=math.ceil(nt.workers() * nt.prefetch_per_worker),
        available_accelerators=nt.accelerator_ids,
        heartbeat_period=nt.heartbeat_period,
        heartbeat_threshold=nt.heartbeat_threshold,
        drain_period=_drain_period(nt),
        poll_period=10,
        worker_logdir_root=str(run_dir / "workers"),
        block_error_handler=False,
        encrypted=False,
        interchange_launch_cmd=_interchange_cmd(),
        **kwargs,
    )


def _globus_compute_executor(label: str, spec: GlobusComputeSpec) -> Any:
    from parsl.executors import GlobusComputeExecutor

    from parsl_es.globus_client import compute_client

    try:
        from globus_compute_sdk import Executor
    except ImportError:
        raise UserError(
            "node types on Globus Compute need the SDK: pip install 'parsl-es[globus]'"
        ) from None
    executor = Executor(endpoint_id=spec.endpoint_id, client=compute_client())
    return GlobusComputeExecutor(executor=executor, label=label)


def build_config(
    site: SiteSpec,
    run_dir: Path,
    node_types: list[str] | None = None,
    monitoring_db: Path | None = None,
) -> Any:
    """The ``parsl.Config`` of a site: one HighThroughputExecutor per node type.

    With ``monitoring_db``, Parsl's MonitoringHub records every task and the
    workers' resource use in that SQLite file (open it with ``parsl-visualize``).
    """
    import logging

    from parsl.config import Config
    from parsl.logconfigs.file import FileLogging

    _put_environment_on_path()
    executors = [
        build_executor(label, nt, run_dir)
        for label, nt in site.node_types.items()
        if node_types is None or label in node_types
    ]
    return Config(
        executors=executors,
        run_dir=str(run_dir),
        strategy="simple",
        strategy_period=site.strategy_period,
        retries=0,
        initialize_logging=FileLogging(level=logging.INFO),
        monitoring=None if monitoring_db is None else _monitoring(site, monitoring_db),
    )


def _monitoring(site: SiteSpec, database: Path) -> Any:
    try:
        import sqlalchemy  # noqa: F401 - Parsl's monitoring database needs it
        from parsl.monitoring import MonitoringHub
    except ImportError:
        raise UserError(
            "monitoring needs Parsl's monitoring extra: pip install 'parsl-es[monitoring]'"
        ) from None
    return MonitoringHub(
        hub_address="127.0.0.1",
        logging_endpoint=f"sqlite:///{Path(database).absolute()}",
        workflow_name=f"parsl-es {site.name}",
        resource_monitoring_interval=10,
    )


def _interchange_cmd() -> list[str]:
    """The interchange, started through ``interchange_guard`` (see there for why).

    The guard puts the interchange in its own session, out of the terminal's
    process group: Ctrl-C would otherwise kill it with the driver, losing the
    results of ranges in flight that a graceful stop wants to keep. And it ends
    the interchange when the driver dies, so a killed driver leaves nothing
    running behind.
    """
    guard = Path(__file__).with_name("interchange_guard.py")
    return [sys.executable, str(guard), "interchange.py"]


def _put_environment_on_path() -> None:
    """HTEX starts ``interchange.py`` and ``process_worker_pool.py`` from PATH.

    Put this interpreter's ``bin`` first so an unactivated virtual environment works
    (batch jobs inherit the driver's environment unless ``worker_init`` says otherwise).
    """
    bindir = str(Path(sys.executable).parent)
    os.environ["PARSL_ES_BIN"] = bindir  # for worker_init lines of batch jobs
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if parts[:1] != [bindir]:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in parts if p != bindir]])
