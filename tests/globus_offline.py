"""The Globus Compute cloud, offline: the hops the tests cannot make for real.

Replaced, here and nowhere else (docs/globus-compute.md says the same):

* the web service's REST API, at the SDK ``Client``'s web client
  (``_compute_web_client``): function registration, batch submission, task
  status and results, and the address of the result queue (``OfflineCloud``);
* the service's AMQP broker and the SDK's connection to it, the one hop the SDK
  ``Executor`` takes besides REST: its result watcher's ``pika.SelectConnection``
  becomes, in the SDK's executor module only, an in-process connection to
  ``OfflineBroker`` (queues, consumers taking turns, acknowledgements, redelivery
  of what a closed channel had not acknowledged); no network, no TLS;
* the endpoint daemon: its registration with the service, its AMQP task and
  result queues, its heartbeats and its configuration file. ``OfflineCloud``
  hands each task to the engine (``engine.submit`` with the batch's resource
  specification and result serialisers) and forwards each ``Result`` to the
  task group's queue;
* how the service builds a ``Task`` message: here the registered function's
  buffer before the packed arguments, which is what ``execute_task`` unpacks;
* Globus Auth: clients carry a ``NullAuthorizer``; ``authorised = False`` makes
  the stand-in answer 401, as the service does for an inactive token.

Real: the SDK's ``Client`` (registration with ``ComputeSerializer``, ``Batch``
packing, unpacking and deserialising results) and ``Executor`` (its submission
thread, batching, rate limit and task group, and its result watcher, which
consumes and acknowledges the result messages and completes the futures);
Parsl's ``GlobusComputeExecutor`` around it; and the endpoint's engine,
``GlobusComputeEngine`` of ``globus-compute-endpoint`` (an HTEX interchange and
one worker pool on loopback, on this host), which unpacks each ``Task``, runs it
with ``execute_task`` in its workers and packs its ``Result``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pika
import pika.exceptions
import pika.spec
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Task
from globus_compute_endpoint.engines import GlobusComputeEngine
from globus_compute_endpoint.engines.base import GCFuture
from parsl.providers import LocalProvider

#: Where the offline service says its result queues are (no such host exists).
AMQP_URL = "amqps://offline-cloud.invalid:5671/%2F"
QUEUE_PREFIX = "offline-results."


class CloudError(Exception):
    """What the web service answers for unknown endpoints or bad tokens."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


class _Reply:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.text = json.dumps(data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


class OfflineCloud:
    """The web service and the endpoint daemon; tasks run on a real endpoint engine.

    While it runs, the SDK's ``Executor`` reaches its result queues in
    ``broker`` (see ``OfflineBroker``); ``close`` puts the real pika back.
    """

    def __init__(self, run_dir: Path, endpoint_id: str | None = None, workers: int = 1) -> None:
        from parsl_es.sites import _put_environment_on_path

        _put_environment_on_path()  # the engine starts globus-compute-endpoint's own scripts
        self.endpoint_id = endpoint_id or str(uuid.uuid4())
        self.engine = GlobusComputeEngine(
            address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
            max_workers_per_node=workers,
            encrypted=False,
            heartbeat_period=2,
            heartbeat_threshold=30,  # a pool on a loaded 2-core CI machine is not lost
            # its one block starts at once and stays for the module's tests
            job_status_kwargs={"strategy_period": 0.5, "max_idletime": 3600},
        )
        self.engine.start(endpoint_id=uuid.UUID(self.endpoint_id), run_dir=str(run_dir))
        #: Where the endpoint runs its tasks (each worker's working directory).
        self.working_dir = Path(self.engine.working_dir)
        self.broker = OfflineBroker()
        self.functions: dict[str, str] = {}
        self.function_names: dict[str, str] = {}
        self.tasks: dict[str, GCFuture] = {}
        #: Tasks handed to the endpoint, per registered function name.
        self.submitted: dict[str, int] = {}
        self.task_groups: set[str] = set()
        #: Finished tasks: the result queue each result went to (None: the group has none).
        self.forwarded: dict[str, str | None] = {}
        self.authorised = True
        self.v2 = SimpleNamespace(get_task=self._get_task, get_result_amqp_url=self._amqp_url)
        self.v3 = SimpleNamespace(register_function=self._register, submit=self._submit)
        self._lock = threading.Lock()
        _use_broker(self.broker)

    def close(self) -> None:
        _use_broker(None)
        self.engine.shutdown()

    def wait_for_workers(self, timeout: float = 60) -> None:
        """Until the endpoint's worker pool has connected (tasks before then wait for it)."""
        deadline = time.time() + timeout
        while not self.worker_pools():
            if time.time() > deadline:
                raise TimeoutError("the endpoint's worker pool did not connect")
            time.sleep(0.2)

    def describe(self) -> str:
        """Where results are: tasks finished at the endpoint, and the broker's queues."""
        with self._lock:
            done = sum(f.done() for f in self.tasks.values())
            queued = sum(q is not None for q in self.forwarded.values())
            tasks = (
                f"{done} of {len(self.tasks)} tasks finished at the endpoint, "
                f"{queued} of them forwarded to a result queue"
            )
        return f"{tasks}; {self.broker.describe()}"

    def worker_pools(self) -> set[str]:
        """The endpoint engine's connected worker pools (HTEX managers)."""
        return {str(m["manager"]) for m in self.engine.executor.connected_managers()}

    # --- the REST API ------------------------------------------------------------------------
    def _check_token(self) -> None:
        if not self.authorised:
            raise CloudError(401, "Token is not active")

    def _register(self, data: dict[str, Any]) -> _Reply:
        self._check_token()
        function_id = str(uuid.uuid4())
        self.functions[function_id] = data["function_code"]
        self.function_names[function_id] = data.get("function_name", "?")
        return _Reply({"function_uuid": function_id})

    def _amqp_url(self) -> _Reply:
        self._check_token()
        return _Reply({"connection_url": AMQP_URL, "queue_prefix": QUEUE_PREFIX})

    def _submit(self, endpoint_id: Any, batch: dict[str, Any]) -> _Reply:
        self._check_token()
        if str(endpoint_id) != self.endpoint_id:
            raise CloudError(404, f"Endpoint {endpoint_id} not found")
        group = batch.get("task_group_id") or str(uuid.uuid4())
        with self._lock:
            self.task_groups.add(group)
        if batch.get("create_queue"):
            self.broker.declare(QUEUE_PREFIX + group)
        submitted: dict[str, list[str]] = {}
        for function_id, payloads in batch["tasks"].items():
            for payload in payloads:
                task_id = str(uuid.uuid4())
                # the service prepends the registered function (already a packed buffer)
                # to the packed arguments
                buffer = self.functions[function_id] + payload
                self._to_endpoint(task_id, self.function_names[function_id], group, buffer, batch)
                submitted.setdefault(function_id, []).append(task_id)
        return _Reply(
            {
                "tasks": submitted,
                "task_group_id": group,
                "request_id": str(uuid.uuid4()),
                "endpoint_id": str(endpoint_id),
            }
        )

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

    # --- the endpoint daemon -------------------------------------------------------------------
    def _to_endpoint(
        self, task_id: str, name: str, group: str, buffer: str, batch: dict[str, Any]
    ) -> None:
        """What the daemon's interchange does with a task from its queue, and its result."""
        future = GCFuture(uuid.UUID(task_id))
        with self._lock:
            self.tasks[task_id] = future
            self.submitted[name] = self.submitted.get(name, 0) + 1
        queue = QUEUE_PREFIX + group

        def forward(done: GCFuture) -> None:  # the result, to the task group's queue
            has_queue = self.broker.has(queue)
            with self._lock:
                self.forwarded[task_id] = queue if has_queue else None
            if has_queue:
                props = pika.spec.BasicProperties(
                    content_type="application/json", timestamp=int(time.time()), headers={}
                )
                self.broker.publish(queue, props, done.result())

        future.add_done_callback(forward)
        self.engine.submit(
            future,
            messagepack.pack(Task(task_id=uuid.UUID(task_id), task_buffer=buffer)),
            resource_specification=batch.get("resource_specification") or {},
            result_serializers=batch.get("result_serializers") or [],
        )


# --- the AMQP broker and the SDK's connection to it --------------------------------------------


class OfflineBroker:
    """Named queues; a queue's consumers take turns; a message stays until acknowledged."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._queues: dict[str, deque[tuple[Any, bytes]]] = {}
        self._consumers: dict[str, list[_Channel]] = {}
        self.connections = 0  # opened by the SDK's result watchers
        self.acknowledged = 0  # messages its consumers acknowledged

    def declare(self, queue: str) -> None:
        with self._lock:
            self._queues.setdefault(queue, deque())

    def describe(self) -> str:
        """Each queue's waiting messages and its consumers (open or not, and unacked)."""
        with self._lock:
            parts = []
            for queue, waiting in self._queues.items():
                consumers = [
                    f"channel {c.channel_number} open={c.is_open} "
                    f"connection open={c.connection.is_open} unacked={len(c._unacked)} "
                    f"watcher {_watcher_state(c.connection)}"
                    for c in self._consumers.get(queue, [])
                ]
                parts.append(f"{queue}: {len(waiting)} waiting, consumers {consumers}")
            return f"acknowledged {self.acknowledged}; " + "; ".join(parts)

    def consumers(self) -> dict[str, int]:
        """Open consumers per queue (queues that have any)."""
        with self._lock:
            counts = {q: sum(c.is_open for c in cs) for q, cs in self._consumers.items()}
            return {q: n for q, n in counts.items() if n}

    def has(self, queue: str) -> bool:
        with self._lock:
            return queue in self._queues

    def publish(self, queue: str, props: Any, body: bytes) -> None:
        with self._lock:
            self._queues[queue].append((props, body))
            self._dispatch(queue)

    def consume(self, queue: str, channel: _Channel) -> None:
        with self._lock:
            if queue not in self._queues:
                raise pika.exceptions.ChannelClosedByBroker(404, f"NOT_FOUND - no queue '{queue}'")
            self._consumers.setdefault(queue, []).append(channel)
            self._dispatch(queue)

    def cancel(self, queue: str, channel: _Channel) -> None:
        with self._lock:
            if channel in self._consumers.get(queue, []):
                self._consumers[queue].remove(channel)

    def requeue(self, queue: str, messages: list[tuple[Any, bytes]]) -> None:
        """Messages delivered but not acknowledged go back to the front of their queue."""
        with self._lock:
            self._queues[queue].extendleft(reversed(messages))
            self._dispatch(queue)

    def _dispatch(self, queue: str) -> None:
        consumers, waiting = self._consumers.get(queue, []), self._queues[queue]
        while consumers and waiting:
            channel = consumers.pop(0)  # round robin, as RabbitMQ does
            consumers.append(channel)
            if not channel.deliver(*waiting[0]):
                consumers.remove(channel)
                continue
            waiting.popleft()


def _watcher_state(connection: _Connection) -> str:
    """The SDK result watcher that opened ``connection``: its futures and held results."""
    import globus_compute_sdk.sdk.executor as sdk_executor

    watcher = getattr(connection._on_close, "__self__", None)
    if watcher is None:
        return "unknown"
    registered = any(w is watcher for w in sdk_executor._RESULT_WATCHERS.values())
    return (
        f"{watcher!r} alive={watcher.is_alive()} registered={registered} "
        f"stopping={watcher._time_to_stop} closed={watcher._closed} "
        f"futures={sorted(watcher._open_futures)} results={sorted(watcher._received_results)}"
    )


class _IOLoop:
    """A connection's I/O loop: callbacks run on the thread that called ``start``."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._timers: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._stopping = False

    def call_later(self, delay: float, callback: Any) -> None:
        with self._cond:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), callback))
            self._cond.notify()

    def add_callback_threadsafe(self, callback: Any) -> None:
        self.call_later(0, callback)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def start(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        self._stopping = False
                        return
                    now = time.monotonic()
                    if self._timers and self._timers[0][0] <= now:
                        callback = heapq.heappop(self._timers)[2]
                        break
                    self._cond.wait(self._timers[0][0] - now if self._timers else None)
            callback()


class _Connection:
    """What the SDK's result watcher uses of ``pika.SelectConnection``, to ``OfflineBroker``."""

    def __init__(
        self,
        broker: OfflineBroker,
        parameters: Any,
        on_open_callback: Any = None,
        on_open_error_callback: Any = None,
        on_close_callback: Any = None,
    ) -> None:
        self.broker = broker
        self.params = parameters
        self.ioloop = _IOLoop()
        self.is_open = False
        self.is_closed = False
        self._on_close = on_close_callback
        self._channels: list[_Channel] = []
        self.ioloop.call_later(0, lambda: self._open(on_open_callback, on_open_error_callback))

    def _open(self, on_open: Any, on_error: Any) -> None:
        expected = urlsplit(AMQP_URL)
        if (self.params.host, self.params.port) != (expected.hostname, expected.port):
            self.is_closed = True
            error = pika.exceptions.AMQPConnectionError(f"no broker at {self.params.host}")
            if on_error:
                on_error(self, error)
            return
        self.broker.connections += 1
        self.is_open = True
        if on_open:
            on_open(self)

    def channel(self, on_open_callback: Any = None) -> _Channel:
        channel = _Channel(self, len(self._channels) + 1)
        self._channels.append(channel)
        if on_open_callback:
            self.ioloop.call_later(0, lambda: on_open_callback(channel))
        return channel

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        if not self.is_open:
            return
        for channel in self._channels:
            channel.close(reply_code, reply_text)
        self.is_open = False
        self.is_closed = True
        reason = pika.exceptions.ConnectionClosedByClient(reply_code, reply_text)
        if self._on_close:
            self.ioloop.call_later(0, lambda: self._on_close(self, reason))


class _Channel:
    def __init__(self, connection: _Connection, number: int) -> None:
        self.connection = connection
        self.channel_number = number
        self.is_open = True
        self.is_closed = False
        self._on_close: list[Any] = []
        self._on_cancel: list[Any] = []
        self._queue: str | None = None
        self._callback: Any = None
        self._tags = itertools.count(1)
        self._unacked: dict[int, tuple[Any, bytes]] = {}
        self._lock = threading.Lock()

    def add_on_close_callback(self, callback: Any) -> None:
        self._on_close.append(callback)

    def add_on_cancel_callback(self, callback: Any) -> None:
        self._on_cancel.append(callback)

    def basic_consume(self, queue: str, on_message_callback: Any, **_: Any) -> str:
        self._queue, self._callback = queue, on_message_callback
        try:
            self.connection.broker.consume(queue, self)
        except pika.exceptions.ChannelClosedByBroker as refused:
            self._queue = None
            self._closed(refused)
        return f"ctag{self.channel_number}.{queue}"

    def deliver(self, props: Any, body: bytes) -> bool:
        """From the broker (any thread); the message reaches the consumer on the connection's
        loop. Unacknowledged from now on: if the channel closes first, it goes back."""
        with self._lock:
            if not self.is_open:
                return False
            tag = next(self._tags)
            self._unacked[tag] = (props, body)

        def arrive() -> None:
            with self._lock:
                if not self.is_open or tag not in self._unacked:
                    return
            deliver = pika.spec.Basic.Deliver(
                consumer_tag=f"ctag{self.channel_number}",
                delivery_tag=tag,
                redelivered=False,
                exchange="",
                routing_key=self._queue,
            )
            self._callback(self, deliver, props, body)

        self.connection.ioloop.add_callback_threadsafe(arrive)
        return True

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[Any, bytes]]:
        with self._lock:
            tags = [
                t for t in self._unacked if t == delivery_tag or (multiple and t < delivery_tag)
            ]
            return [self._unacked.pop(t) for t in sorted(tags)]

    def basic_ack(self, delivery_tag: int = 0, multiple: bool = False) -> None:
        done = self._take(delivery_tag, multiple)
        with self.connection.broker._lock:
            self.connection.broker.acknowledged += len(done)

    def basic_nack(
        self, delivery_tag: int = 0, multiple: bool = False, requeue: bool = True
    ) -> None:
        back = self._take(delivery_tag, multiple)
        if requeue and back and self._queue:
            self.connection.broker.requeue(self._queue, back)

    def close(self, reply_code: int = 200, reply_text: str = "Normal shutdown") -> None:
        if self.is_open:
            self._closed(pika.exceptions.ChannelClosedByClient(reply_code, reply_text))

    def _closed(self, reason: Exception) -> None:
        with self._lock:
            self.is_open = False
            self.is_closed = True
            unacked = [self._unacked.pop(t) for t in sorted(self._unacked)]
        if self._queue is not None:
            self.connection.broker.cancel(self._queue, self)
            self.connection.broker.requeue(self._queue, unacked)
        for callback in self._on_close:
            self.connection.ioloop.call_later(0, lambda cb=callback: cb(self, reason))


class _PikaWithOfflineBroker:
    """The ``pika`` the SDK's executor module sees: connections go to the offline broker."""

    def __init__(self, broker: OfflineBroker) -> None:
        self._broker = broker

    def SelectConnection(self, parameters: Any = None, **callbacks: Any) -> _Connection:
        return _Connection(self._broker, parameters, **callbacks)

    def __getattr__(self, name: str) -> Any:
        return getattr(pika, name)


def _use_broker(broker: OfflineBroker | None) -> None:
    """Point the SDK executor's AMQP connections at ``broker`` (None: the real pika)."""
    import globus_compute_sdk.sdk.executor as sdk_executor

    if broker is None:
        sdk_executor.pika = pika
        return
    assert sdk_executor.pika is pika, "another offline cloud is running"
    sdk_executor.pika = _PikaWithOfflineBroker(broker)


# --- clients ------------------------------------------------------------------------------------


def client_for(cloud: OfflineCloud) -> Any:
    """The real SDK client, constructed without the network, talking to ``cloud``."""
    import globus_sdk
    from globus_compute_sdk import Client

    client = Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
    client._compute_web_client = cloud
    return client


#: The cloud the CLI's and the sites' clients talk to in the tests (``PARSL_ES_COMPUTE_CLIENT``).
CURRENT: OfflineCloud | None = None


def cli_client() -> Any:
    assert CURRENT is not None, "no offline cloud started"
    return client_for(CURRENT)


def unconnected_client() -> Any:
    """A real SDK client that never reaches the network (for building configurations)."""
    import globus_sdk
    from globus_compute_sdk import Client

    return Client(do_version_check=False, authorizer=globus_sdk.NullAuthorizer())
