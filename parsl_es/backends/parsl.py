"""The Parsl backend: a loaded site, one executor per node type.

A node type is a HighThroughputExecutor whose worker pools the backend sees
(for windows, wedged pools and ending blocks), or a GlobusComputeExecutor: an
endpoint whose workers it cannot see, and whose lost workers come back as the
endpoint's traceback text (``lost`` reads it).

Loading Parsl costs seconds (interchange, worker pools, blocks), so a backend is
reused for every campaign run in one process: the test suite shares one, and a
notebook kernel keeps one for all its campaigns. Every use of a Parsl name that
is not public API is in this module and listed in ``PARSL_INTERNALS``, checked
against the installed Parsl by ``check_parsl_internals`` (and by a test, for the
Parsl version the project pins).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from parsl_es import apps
from parsl_es.backends.base import Call, Completions, DependencyFailed, Priority, WorkLost
from parsl_es.crashpoints import crash_point
from parsl_es.interrupts import shielded
from parsl_es.records import PoolInfo
from parsl_es.sites import SiteSpec, build_config

log = logging.getLogger(__name__)

#: Parsl names used here that are not public API: (module, class, attribute).
PARSL_INTERNALS = (
    ("parsl.executors.high_throughput.executor", "HighThroughputExecutor", "_hold_block"),
    ("parsl.executors.high_throughput.executor", "HighThroughputExecutor", "connected_managers"),
    ("parsl.executors.status_handling", "BlockProviderExecutor", "blocks_to_job_id"),
    ("parsl.executors.high_throughput.executor", "HighThroughputExecutor", "poll_period"),
    # the Globus Compute SDK's (checked when it is installed): see ``_wait_for_result_watchers``
    ("globus_compute_sdk.sdk.executor", "_ResultWatcher", "task_group_id"),
    ("globus_compute_sdk.sdk.executor", "_ResultWatcher", "_closed"),
)

#: How long closing a backend waits for an endpoint's result watcher to stop consuming.
WATCHER_STOP_SECONDS = 10.0

#: How long the driver's HTEX result thread blocks on its socket (ms): it wakes at once
#: for a result; the period only bounds how late it sees the executor shut down. The
#: interchange was started with ``build.POLL_PERIOD_MS`` (10 ms, Parsl's default, which
#: woke the idle driver 100 times a second: 1.2-1.7 % of a core).
RESULT_POLL_MS = 1000


def check_parsl_internals() -> list[str]:
    """The internal Parsl names this backend needs that the installed Parsl lacks."""
    import importlib
    import inspect

    missing = []
    for module, cls, attr in PARSL_INTERNALS:
        try:
            klass = getattr(importlib.import_module(module), cls)
        except ModuleNotFoundError:  # an optional extra, and the code that needs it
            continue
        source = inspect.getsource(klass)
        if not hasattr(klass, attr) and f"self.{attr}" not in source:
            missing.append(f"{module}.{cls}.{attr}")
    return missing


def _wait_for_result_watchers(task_groups: set[Any], timeout: float) -> None:
    """Until the SDK result watchers of ``task_groups`` that were told to stop have stopped
    consuming.

    The SDK gives every Executor of a process the same task group, so the same result
    queue. Parsl's ``GlobusComputeExecutor.shutdown`` only tells its watcher to stop; until
    its next poll (twice a second by default) and the closing of its channel it still
    takes results from that queue, results meant for the next backend's futures (the next
    campaign in a notebook kernel), which then never finish.
    """
    if not task_groups:
        return
    from globus_compute_sdk.sdk.executor import _ResultWatcher

    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        told_to_stop = isinstance(thread, _ResultWatcher) and thread._closed
        if told_to_stop and thread.task_group_id in task_groups:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("a Globus Compute result watcher did not stop in %.0f s", timeout)


def _lost_errors() -> tuple[type[BaseException], ...]:
    from parsl.executors.errors import BadStateException
    from parsl.executors.high_throughput.errors import ManagerLost, WorkerLost

    return (WorkLost, WorkerLost, ManagerLost, BadStateException)


#: The last line of an endpoint's traceback when the endpoint's own Parsl lost the task's
#: worker or worker pool (the SDK spots WorkerLost in that text the same way).
_ENDPOINT_LOSS = re.compile(r"parsl\.executors\.high_throughput\.errors\.(WorkerLost|ManagerLost):")


def lost_on_endpoint(exc: BaseException) -> bool:
    """Whether a Globus Compute task failed because the endpoint lost its worker or pool.

    The SDK hands back only the endpoint's traceback, as text, in a
    ``TaskExecutionFailed``: the task's own exceptions arrive as themselves.
    """
    data = getattr(exc, "remote_data", None)
    if type(exc).__name__ != "TaskExecutionFailed" or not isinstance(data, str):
        return False
    lines = [line.strip() for line in data.splitlines() if line.strip(" +-")]
    return bool(lines) and _ENDPOINT_LOSS.match(lines[-1]) is not None


#: Parsl's logger of task states: nine INFO lines in ``parsl.log`` per task (submitted,
#: pending, launched, two "not redirected", each change of state). At the 1,000
#: tasks/s a driver may send that is 9,000 lines/s, each formatted and written by the
#: driver. The ledger records each task and attempt; Parsl's warnings and errors are
#: still logged.
TASK_LOGGER = "parsl.dataflow.dflow"


#: Whether the level of ``TASK_LOGGER`` is this module's doing (not the user's).
_QUIETED: set[str] = set()


def _task_log_for_start_up() -> None:
    """Before a DFK starts: its start-up lines reach its own ``parsl.log``, also when a
    backend earlier in this process (a notebook's previous session) quieted the logger."""
    if TASK_LOGGER in _QUIETED:
        logging.getLogger(TASK_LOGGER).setLevel(logging.NOTSET)
        _QUIETED.discard(TASK_LOGGER)


def _quiet_task_log() -> None:
    """Parsl's per-task lines off, once its start-up (config, version, run id) is logged;
    a level the user set on that logger before stands."""
    logger = logging.getLogger(TASK_LOGGER)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
        _QUIETED.add(TASK_LOGGER)


class ParslBackend:
    """Parsl loaded for one site; apps are bound per (step function, node type)."""

    def __init__(self, site: SiteSpec, run_dir: Path, monitoring_db: Path | None = None) -> None:
        from parsl.dataflow.dflow import DataFlowKernel

        self.site = site
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.monitoring_db = monitoring_db
        self._apps: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._lost = _lost_errors()
        self.closed = False
        config = build_config(site, self.run_dir, monitoring_db=monitoring_db)
        try:
            # Once Parsl starts, its interchange and worker blocks run until ended:
            # a Ctrl-C meanwhile waits until it has started, then ends it (close).
            with shielded():
                crash_point("site-loading")
                _task_log_for_start_up()
                self.dfk = DataFlowKernel(config)
            self._quiet_result_threads()
            _quiet_task_log()
        except BaseException:
            if hasattr(self, "dfk"):
                self.close()
            raise

    def _quiet_result_threads(self) -> None:
        """The driver's result threads read ``poll_period`` at each wait: lengthen it
        now that the interchange has been started with the short one."""
        from parsl.executors import HighThroughputExecutor

        for ex in self.dfk.executors.values():
            if isinstance(ex, HighThroughputExecutor):
                ex.poll_period = RESULT_POLL_MS

    # --- the backend protocol ---------------------------------------------------------------
    def now(self) -> float:
        return time.time()

    def node_types(self) -> list[str]:
        return list(self.site.node_types)

    def submit(self, node_type: str, call: Call) -> Future:
        app = self.app(call.function, node_type)
        kwargs: dict[str, Any] = {}
        if call.inputs:
            kwargs["inputs"] = list(call.inputs)
        if call.priority is not Priority.IN_TURN and self.sees_pools(node_type):
            # HTEX's interchange sends the lowest first; a task without one after them all
            kwargs["parsl_resource_specification"] = {"priority": int(call.priority)}
        return app(*call.args, **kwargs)

    def pools(self, node_type: str) -> list[PoolInfo] | None:
        """The worker pools connected to the node type's executor; None if it cannot say.

        None for a Globus Compute endpoint: its pools are the endpoint's, out of sight.
        """
        if not self.sees_pools(node_type):
            return None
        try:
            managers = list(self.executor(node_type).connected_managers())
        except Exception:
            return None
        return [
            PoolInfo(
                pool=str(m.get("manager")),
                block=None if m.get("block_id") is None else str(m.get("block_id")),
                workers=int(m.get("worker_count", 0)),
                tasks=int(m.get("tasks", 0)),
                active=bool(m.get("active", True)),
            )
            for m in managers
        ]

    def end_block(self, node_type: str, block: str) -> bool:
        """Stop giving a block tasks and cancel it; its tasks come back as lost.

        For a worker pool that is wedged: Parsl only notices pools that stop
        sending heartbeats.
        """
        if not self.sees_pools(node_type):
            return False
        ex = self.executor(node_type)
        try:
            ex._hold_block(block)  # no new tasks while it is being cancelled
            job = ex.blocks_to_job_id.get(block)
            if job is None:
                return False
            return bool(ex.provider.cancel([job])[0])
        except Exception:
            log.exception("could not end block %s of %s", block, node_type)
            return False

    def expected_workers(self, node_type: str) -> int:
        return self.site.node_types[node_type].expected_workers()

    def in_flight_per_worker(self) -> float:
        return self.site.in_flight_per_worker

    def lost(self, exc: BaseException) -> bool:
        return isinstance(exc, self._lost) or lost_on_endpoint(exc)

    def dependency_failed(self, exc: BaseException) -> bool:
        from parsl.dataflow.errors import DependencyError

        return isinstance(exc, (DependencyError, DependencyFailed))

    def wait(self, completions: Completions, timeout: float) -> None:
        completions.wait(timeout)

    def close(self) -> None:
        """Stop the executors, interchange and worker pools (no orphans left behind)."""
        if not self.closed:
            self.closed = True
            # endpoints' SDK Executors (Parsl's GlobusComputeExecutor keeps it as .executor)
            groups = {
                self.executor(nt).executor.task_group_id
                for nt in self.node_types()
                if not self.sees_pools(nt)
            } - {None}
            with shielded():  # half-ended executors would leave their workers running
                self.dfk.cleanup()
                _wait_for_result_watchers(groups, WATCHER_STOP_SECONDS)

    # --- for front ends and benchmarks -----------------------------------------------------
    def app(self, name: str, node_type: str) -> Any:
        """The Parsl python app running ``apps.<name>`` on ``node_type``'s executor."""
        key = (name, node_type)
        with self._lock:
            if key not in self._apps:
                from parsl.app.app import python_app

                if node_type not in self.site.node_types:
                    raise KeyError(f"site {self.site.name} has no node type {node_type}")
                self._apps[key] = python_app(
                    getattr(apps, name), executors=[node_type], data_flow_kernel=self.dfk
                )
            return self._apps[key]

    def executor(self, node_type: str) -> Any:
        return self.dfk.executors[node_type]

    def sees_pools(self, node_type: str) -> bool:
        """Whether the node type's worker pools are this driver's (HTEX), not an endpoint's."""
        from parsl.executors import HighThroughputExecutor

        return isinstance(self.executor(node_type), HighThroughputExecutor)

    def connected_workers(self, node_type: str) -> int | None:
        """Workers connected to the node type's executor; None if it cannot say now."""
        pools = self.pools(node_type)
        return None if pools is None else sum(p.workers for p in pools if p.active)

    def __enter__(self) -> ParslBackend:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
