"""What a site file may say: the pydantic models a site YAML is validated into.

Kept apart from loading and building so that the models (and the walltime
arithmetic the allocation code needs) cost neither Parsl nor file access:
frozen and strict, a misspelt key is an error, not a silent default; ``true`` is
no count, and every number has a bound (a site asking for 10**12 accelerators or
workers per node is refused here, not found out by the driver or Slurm).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from parsl_es.containers import ContainerSpec
from parsl_es.errors import FieldError, allowed, did_you_mean, shown
from parsl_es.yamlfile import line_of

WALLTIME = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)$")
MAX_WALLTIME_DAYS = 365
MAX_BLOCKS = 10_000
MAX_WORKERS_PER_NODE = 4096
MAX_ACCELERATORS = 256
DAY = 86_400
# Where workers reach the driver: 'hostname', 'interface:NAME', or an address or host name.
ADDRESS = re.compile(r"^(?:hostname|interface:[\w.:@-]{1,64}|[\w.:%-]{1,253})$")


def walltime_seconds(text: str) -> int:
    """Seconds in a Slurm walltime ``[D-]HH:MM:SS`` (at most ``MAX_WALLTIME_DAYS`` days)."""
    m = WALLTIME.match(text)
    if not m:
        raise ValueError(f"walltime {shown(text)} is not [D-]HH:MM:SS")
    if m.group(1) and (len(m.group(1)) > 3 or int(m.group(1)) > MAX_WALLTIME_DAYS):
        raise ValueError(f"walltime {shown(text)} is more than {MAX_WALLTIME_DAYS} days")
    days, h, mi, s = (int(x) if x else 0 for x in m.groups())
    return ((days * 24 + h) * 60 + mi) * 60 + s


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class LauncherSpec(_Strict):
    """How the worker pool is started inside a block."""

    kind: Literal["srun", "simple", "single_node"] = "srun"
    overrides: str = Field("", description="extra srun options (srun only)")


class LocalProviderSpec(_Strict):
    """Workers on the machine that runs the driver (no batch system)."""

    kind: Literal["local"] = "local"
    init_blocks: int = Field(1, ge=0, le=MAX_BLOCKS)
    min_blocks: int = Field(0, ge=0, le=MAX_BLOCKS)
    max_blocks: int = Field(1, ge=1, le=MAX_BLOCKS)
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
    nodes_per_block: int = Field(1, ge=1, le=100_000)
    cores_per_node: int | None = Field(None, ge=1, le=65_536)
    mem_per_node: int | None = Field(None, ge=1, le=1_048_576, description="GB")
    gpus_per_node: int | None = Field(None, ge=1, le=MAX_ACCELERATORS)
    gres: str | None = None
    init_blocks: int = Field(1, ge=0, le=MAX_BLOCKS)
    min_blocks: int = Field(0, ge=0, le=MAX_BLOCKS)
    max_blocks: int = Field(1, ge=1, le=MAX_BLOCKS)
    parallelism: float = Field(1.0, gt=0, le=1)
    walltime: str = "01:00:00"
    exclusive: bool = True
    scheduler_options: list[str] = Field(
        default_factory=list, description="extra '#SBATCH ...' lines"
    )
    worker_init: str = ""
    launcher: LauncherSpec = LauncherSpec()
    cmd_timeout: int = Field(60, ge=1, le=DAY)

    @field_validator("walltime", mode="before")
    @classmethod
    def _quoted(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError(
                "must be text, [D-]HH:MM:SS in quotes: YAML reads an unquoted 2:00:00 as a "
                "number of seconds"
            )
        return v

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
    endpoint runs them with its own configuration; ``workers`` is how many of its
    workers this node type counts on (the driver cannot see them): it keeps
    ``in_flight_per_worker`` tasks per worker there, as for any node type.
    """

    kind: Literal["globus-compute"]
    endpoint_id: str = Field(pattern=r"^[0-9a-fA-F-]{36}$")
    workers: int = Field(4, ge=1, le=100_000)
    init_blocks: int = Field(1, ge=0, le=MAX_BLOCKS)


ProviderSpec = Annotated[
    LocalProviderSpec | SlurmProviderSpec | GlobusComputeSpec, Field(discriminator="kind")
]


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost (names and interfaces are not: they resolve elsewhere)."""
    return address in ("localhost", "::1") or address.startswith("127.")


class NodeTypeSpec(_Strict):
    """One kind of node and the HighThroughputExecutor that runs on it."""

    description: str = ""
    provider: ProviderSpec = LocalProviderSpec()
    workers_per_node: int | Literal["auto"] = "auto"
    cores_per_worker: float = Field(1.0, ge=0.01, le=4096)
    accelerators: int | list[str] = Field(
        0, description="GPUs per node: a count or device ids; one worker per accelerator"
    )
    prefetch_per_worker: float = Field(
        1.0,
        ge=0,
        le=1000,
        description="tasks a worker pool holds beyond its free workers, per worker: the next "
        "bundle is there when a worker finishes, not a round trip to the interchange away",
    )
    heartbeat_period: int = Field(5, ge=1, le=DAY)
    heartbeat_threshold: int = Field(20, ge=2, le=DAY)
    drain_margin_seconds: int = Field(
        300,
        ge=0,
        le=MAX_WALLTIME_DAYS * DAY,
        description="workers stop taking ranges this long before a block's walltime",
    )
    address: str = Field(
        "127.0.0.1",
        description="where workers reach the driver: an address, 'hostname', or "
        "'interface:NAME' (e.g. interface:hsn0 on Perlmutter)",
    )
    encrypted: bool | None = Field(
        None,
        description="encrypt worker traffic (CurveZMQ, certificates in the run directory); "
        "default: on unless the address is loopback",
    )
    container: ContainerSpec | None = None

    @property
    def loopback(self) -> bool:
        """Whether workers reach the driver on this host's loopback only."""
        return is_loopback(self.address)

    @property
    def effective_encrypted(self) -> bool:
        """Encryption as it will be: as set, else on for any address off loopback."""
        return (not self.loopback) if self.encrypted is None else self.encrypted

    @field_validator("workers_per_node", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if v == "auto":
            return v
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WORKERS_PER_NODE:
            raise ValueError(f"must be a whole number from 1 to {MAX_WORKERS_PER_NODE}, or 'auto'")
        return v

    @field_validator("accelerators")
    @classmethod
    def _accelerators(cls, v: int | list[str]) -> int | list[str]:
        if isinstance(v, int) and not 0 <= v <= MAX_ACCELERATORS:
            raise ValueError(f"must be from 0 to {MAX_ACCELERATORS}")
        if isinstance(v, list) and len(v) > MAX_ACCELERATORS:
            raise ValueError(f"at most {MAX_ACCELERATORS} device ids")
        return v

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not ADDRESS.match(v):
            raise ValueError("must be an IP address or host name, 'hostname', or 'interface:NAME'")
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
            n = min(MAX_WORKERS_PER_NODE, max(1, int(cores // self.cores_per_worker)))
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
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    node_types: dict[str, NodeTypeSpec] = Field(min_length=1, max_length=64)
    steps: SiteSteps
    strategy_period: float = Field(0.5, gt=0, le=3600)
    in_flight_per_worker: float = Field(
        2.0, ge=1.0, le=1000, description="ranges kept in flight per connected worker (prefetch)"
    )
    #: The file it was read from and the lines of its fields (for messages), if any.
    _source: str | None = PrivateAttr(None)
    _lines: dict[tuple, int | None] = PrivateAttr(default_factory=dict)

    def model_post_init(self, _: Any) -> None:
        known = set(self.node_types)
        for name in known:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", name):
                raise FieldError(
                    ("node_types", name),
                    f"node type name {shown(name)}: a letter, then letters, digits, _ and - "
                    "(at most 32)",
                )
        for step, names in (
            ("simulate", self.steps.simulate),
            ("merge", [self.steps.merge]),
            ("validate", [self.steps.validate_]),
        ):
            for i, n in enumerate(names):
                if n not in known:
                    where = ("steps", step, i) if step == "simulate" else ("steps", step)
                    raise FieldError(
                        where,
                        f"unknown node type {shown(n)}{did_you_mean(n, known)}; "
                        f"allowed: {allowed(known)}",
                    )

    def source_line(self, loc: tuple) -> tuple[str | None, int | None]:
        """The file this site came from and the line of field ``loc`` in it, where known."""
        return self._source, line_of(self._lines, loc) if self._source else None
