"""A loaded site: a Parsl DataFlowKernel and the apps bound to its node types.

Loading Parsl costs seconds (interchange, worker pools, blocks), so a session is
reused for every campaign run in one process: the test suite shares one, and a
notebook kernel keeps one for all its campaigns.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from parsl_es import apps
from parsl_es.sites import SiteSpec, build_config

log = logging.getLogger(__name__)


def workers_of(managers: list[dict[str, Any]]) -> int:
    return sum(int(m.get("worker_count", 0)) for m in managers if m.get("active", True))


class SiteSession:
    """Parsl loaded for one site; apps are bound per (step function, node type)."""

    def __init__(self, site: SiteSpec, run_dir: Path, monitoring_db: Path | None = None) -> None:
        from parsl.dataflow.dflow import DataFlowKernel

        self.site = site
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.monitoring_db = monitoring_db
        self.dfk = DataFlowKernel(build_config(site, self.run_dir, monitoring_db=monitoring_db))
        self._apps: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.closed = False

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

    def managers(self, node_type: str) -> list[dict[str, Any]] | None:
        """The worker pools connected to the node type's executor; None if it cannot say."""
        try:
            return list(self.executor(node_type).connected_managers())
        except Exception:
            return None

    def connected_workers(self, node_type: str) -> int | None:
        """Workers connected to the node type's executor; None if it cannot say now."""
        managers = self.managers(node_type)
        if managers is None:
            return None
        return workers_of(managers)

    def end_block(self, node_type: str, block_id: str) -> bool:
        """Stop giving a block tasks and cancel it; its tasks come back as lost.

        For a worker pool that is wedged: Parsl only notices pools that stop
        sending heartbeats.
        """
        ex = self.executor(node_type)
        try:
            ex._hold_block(block_id)  # no new tasks while it is being cancelled
            job = ex.blocks_to_job_id.get(block_id)
            if job is None:
                return False
            return bool(ex.provider.cancel([job])[0])
        except Exception:
            log.exception("could not end block %s of %s", block_id, node_type)
            return False

    def close(self) -> None:
        """Stop the executors, interchange and worker pools (no orphans left behind)."""
        if not self.closed:
            self.closed = True
            self.dfk.cleanup()

    def __enter__(self) -> SiteSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
