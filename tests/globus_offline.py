"""The Globus Compute cloud, offline: the one hop the tests cannot make for real.

The SDK's ``Client`` talks to the Globus Compute web service through its web
client; this stands in for that web client only. Functions registered by the
real ``Client`` (serialised with the SDK's ``ComputeSerializer``) and batches
packed by the real SDK ``Batch`` are turned into the ``Task`` messages an
endpoint receives, and executed by the real endpoint engine of
``globus-compute-endpoint`` (``GlobusComputeEngine``: HTEX on loopback). Its
``Result`` messages are returned in the web service's shape, which the real
``Client`` unpacks and deserialises as it does in production.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines import GlobusComputeEngine
from globus_compute_endpoint.engines.base import GCFuture
from parsl.providers import LocalProvider


class CloudError(Exception):
    """What the web service answers for unknown endpoints or bad tokens."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


class _Reply:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.text = json.dumps(data)


class OfflineCloud:
    """Functions and tasks kept here; tasks run by a real endpoint engine."""

    def __init__(self, run_dir: Path, endpoint_id: str | None = None) -> None:
        from parsl_es.sites import _put_environment_on_path

        _put_environment_on_path()  # the engine starts globus-compute-endpoint's own scripts
        self.endpoint_id = endpoint_id or str(uuid.uuid4())
        self.engine = GlobusComputeEngine(
            address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
            max_workers_per_node=1,
            encrypted=False,
            heartbeat_period=2,
            heartbeat_threshold=10,
        )
        self.engine.start(endpoint_id=uuid.UUID(self.endpoint_id), run_dir=str(run_dir))
        self.functions: dict[str, str] = {}
        self.tasks: dict[str, GCFuture] = {}
        self.authorised = True
        self.v2 = SimpleNamespace(get_task=self._get_task)
        self.v3 = SimpleNamespace(register_function=self._register, submit=self._submit)

    def close(self) -> None:
        self.engine.shutdown()

    def _check_token(self) -> None:
        if not self.authorised:
            raise CloudError(401, "Token is not active")

    def _register(self, data: dict[str, Any]) -> _Reply:
        self._check_token()
        function_id = str(uuid.uuid4())
        self.functions[function_id] = data["function_code"]
        return _Reply({"function_uuid": function_id})

    def _submit(self, endpoint_id: Any, batch: dict[str, Any]) -> _Reply:
        self._check_token()
        if str(endpoint_id) != self.endpoint_id:
            raise CloudError(404, f"Endpoint {endpoint_id} not found")
        submitted: dict[str, list[str]] = {}
        for function_id, payloads in batch["tasks"].items():
            for payload in payloads:
                task_id = uuid.uuid4()
                # the service prepends the registered function (already a packed buffer)
                # to the packed arguments
                buffer = self.functions[function_id] + payload
                future = GCFuture(task_id)
                self.engine.submit(
                    future, messagepack.pack(Task(task_id=task_id, task_buffer=buffer)), {}
                )
                self.tasks[str(task_id)] = future
                submitted.setdefault(function_id, []).append(str(task_id))
        return _Reply({"tasks": submitted, "request_id": "offline", "endpoint_id": endpoint_id})

    def _get_task(self, task_id: Any) -> _Reply:
        self._check_token()
        future = self.tasks.get(str(task_id))
        if future is None:
            raise CloudError(404, f"Task {task_id} not found")
        if not future.done():
            return _Reply({"task_id": str(task_id), "status": "running"})
        result = messagepack.unpack(future.result())
        reply = {
            "task_id": str(result.task_id),
            "status": "failed" if result.is_error else "success",
            "completion_t": str(time.time()),
            "details": result.details,
        }
        reply["exception" if result.is_error else "result"] = result.data
        return _Reply(reply)


def client_for(cloud: OfflineCloud) -> Any:
    """The real SDK client, constructed without the network, talking to ``cloud``."""
    import globus_sdk
    from globus_compute_sdk import Client

    client = Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
    client._compute_web_client = cloud
    return client


#: The cloud the CLI's client talks to in the tests (``PARSL_ES_COMPUTE_CLIENT``).
CURRENT: OfflineCloud | None = None


def cli_client() -> Any:
    assert CURRENT is not None, "no offline cloud started"
    return client_for(CURRENT)


def unconnected_client() -> Any:
    """A real SDK client that never reaches the network (for building configurations)."""
    import globus_sdk
    from globus_compute_sdk import Client

    return Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
