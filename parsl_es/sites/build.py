"""Turning a site spec into a ``parsl.Config``: one executor per node type.

The only module of the package that touches Parsl, and only inside functions:
workers and ``es-run sites`` import the site models without paying for Parsl.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Any

from parsl_es.containers import container_argv
from parsl_es.errors import UserError
from parsl_es.sites.spec import (
    GlobusComputeSpec,
    LauncherSpec,
    LocalProviderSpec,
    NodeTypeSpec,
    SiteSpec,
    SlurmProviderSpec,
    walltime_seconds,
)


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
        poll_period=POLL_PERIOD_MS,
        worker_logdir_root=str(run_dir / "workers"),
        block_error_handler=False,
        encrypted=nt.effective_encrypted,
        interchange_launch_cmd=_interchange_cmd(),
        **kwargs,
    )


#: HTEX's ``poll_period`` (milliseconds), as the interchange gets it: its loop's period.
#: Kept at Parsl's default: at 1000 ms workers waited 0.8 s in the median between two
#: bundles (128 x 0.1 s efficiency case: 54-64 % instead of 91-95 %), so some hand-over
#: in the interchange waits for the period. The driver's own result thread is given
#: ``ParslBackend.RESULT_POLL_MS`` once Parsl has started.
POLL_PERIOD_MS = 10

#: The SDK Executor's own rate limit on small submissions (fewer tasks than the limit):
#: this many in a window, then one per window / limit (plus up to 1 s). The engine refills a
#: node type's window as results come back, a few tasks at a time (the SDK hands
#: results over twice a second); at the SDK's default (4 in 16 s) every refill after
#: the fourth waited about 4 s. 8 is the most the SDK allows.
API_BURST_LIMIT = 8
API_BURST_WINDOW_SECONDS = 4


def _globus_compute_executor(label: str, spec: GlobusComputeSpec) -> Any:
    from parsl.executors import GlobusComputeExecutor

    from parsl_es.globus_client import compute_client

    try:
        from globus_compute_sdk import Executor
    except ImportError:
        raise UserError(
            "node types on Globus Compute need the SDK: pip install 'parsl-es[globus]'"
        ) from None
    executor = Executor(
        endpoint_id=spec.endpoint_id,
        client=compute_client(),
        api_burst_limit=API_BURST_LIMIT,
        api_burst_window_s=API_BURST_WINDOW_SECONDS,
    )
    return GlobusComputeExecutor(executor=executor, label=label)


def build_config(
    site: SiteSpec,
    run_dir: Path,
    node_types: list[str] | None = None,
    monitoring_db: Path | None = None,
) -> Any:
    """The ``parsl.Config`` of a site: one executor per node type.

    A HighThroughputExecutor, or for an endpoint a GlobusComputeExecutor.

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
    guard = Path(__file__).parent.parent / "interchange_guard.py"  # parsl_es/, beside sites/
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
