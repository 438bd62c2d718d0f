"""The simulated machine in a process of its own, for scale runs that measure the driver.

``SimulatedBackend(clock="real")`` runs the machine in a thread of the driver's
process, so at a large scale the simulator (queues, durations, made-up results)
competes with the engine for one GIL; on a real machine the workers are
elsewhere. ``SimulatedMachineProcess`` runs that same machine in a child process
and speaks the backend protocol over a pipe, so the driver's process does only
what a real driver does: submit tasks (a lock and a deque append; a sender
thread ships what accumulated in one message) and receive results (a receiver
thread sets the futures). Chained calls are resolved here, the campaign's plan
crosses the pipe once, and the rare queries are request and reply.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import pickle
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, replace
from typing import Any

from parsl_es.backends.base import Call, Completions, DependencyFailed, WorkLost
from parsl_es.backends.sim_spec import NO_FAULTS
from parsl_es.backends.simulated import (
    SimFaults,
    SimNodeType,
    SimulatedBackend,
    SimulatedMachineAnswers,
)
from parsl_es.ranges import RangePlan
from parsl_es.records import PoolInfo

#: How long a query may take before the machine is taken for dead (seconds).
QUERY_SECONDS = 60.0
#: What ``close`` reads once, so that figures are still there after the child is gone.
FINAL = ("all_busy_at", "late_seconds", "ranges_run", "ranges_finished", "busy_seconds")


@dataclass(frozen=True)
class _PlanRef:
    """A plan already sent, by its key: a bundle's args without the plan pickled again."""

    key: int


class SimulatedMachineProcess(SimulatedMachineAnswers):
    """The backend protocol, with the simulated machine in a child process (real clock)."""

    def __init__(
        self,
        node_types: dict[str, SimNodeType],
        faults: SimFaults = NO_FAULTS,
        *,
        seed: int = 1,
    ) -> None:
        self.spec = node_types
        self.submitted: Counter[str] = Counter()  # tasks submitted, by worker function
        # the same anchor as the child's clock: CLOCK_MONOTONIC is system-wide
        self._offset = time.time() - time.monotonic()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._outbox: deque[tuple] = deque()
        self._ids = itertools.count()
        self._waiting: dict[int, Future] = {}  # task and query ids -> their futures
        self._plans: dict[int, RangePlan] = {}  # sent, by id(); held so ids stay valid
        self._final: dict[str, Any] | None = None
        self._dead = False
        self._closed = False
        ctx = multiprocessing.get_context("spawn")  # the driver has threads: no fork
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, node_types, faults, seed, self._offset),
            name="sim-machine",
            daemon=True,
        )
        self._proc.start()
        child.close()  # so that the child's end closing means EOF here
        self._sender = threading.Thread(target=self._send_loop, name="sim-send", daemon=True)
        self._receiver = threading.Thread(target=self._recv_loop, name="sim-recv", daemon=True)
        self._sender.start()
        self._receiver.start()

    # --- the backend protocol ---------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() + self._offset

    def node_types(self) -> list[str]:
        return list(self.spec)

    def submit(self, node_type: str, call: Call) -> Future:
        future: Future = Future()
        self.submitted[call.function] += 1
        deps = [a for a in (*call.args, *call.inputs) if isinstance(a, Future)]
        if deps:
            self._after(deps, node_type, call, future)
        else:
            self._post("task", future, (node_type, call))
        return future

    def pools(self, node_type: str) -> list[PoolInfo]:
        return self._ask("pools", node_type)

    def end_block(self, node_type: str, block: str) -> bool:
        return self._ask("end_block", node_type, block)

    def wait(self, completions: Completions, timeout: float) -> None:
        """The receiver thread's done-callbacks fill ``completions``: just block."""
        completions.wait(timeout)

    def close(self) -> None:
        """Read the final figures, stop the child (killed if it will not stop), and fail
        what is still in flight as lost. Idempotent; a dead child does not hang it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._dead:
            with contextlib.suppress(WorkLost, TimeoutError):
                self._final = {name: self._ask(name) for name in FINAL}
        self._post("close", Future(), ())
        self._proc.join(5.0)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self._receiver.join()  # (EOF once the child is gone)
        self._died("the simulated machine was closed")
        self._sender.join()
        self._conn.close()

    # --- the figures of ``benchmarks.scale`` (queries: about once a second) -----------------
    def busy_seconds(self) -> tuple[float, float, int]:
        """``(time, worker-seconds busy since the start, workers busy now)`` at one moment."""
        return self._figure("busy_seconds")

    @property
    def all_busy_at(self) -> float | None:
        """When every worker first ran a task."""
        return self._figure("all_busy_at")

    @property
    def late_seconds(self) -> float:
        """How far behind its schedule the machine ran (real time)."""
        return self._figure("late_seconds")

    @property
    def ranges_run(self) -> int:
        """Ranges started, over all simulate tasks."""
        return self._figure("ranges_run")

    @property
    def ranges_finished(self) -> int:
        """Ranges of simulate tasks whose results were handed back."""
        return self._figure("ranges_finished")

    @property
    def pid(self) -> int | None:
        """The child's process id (``benchmarks.scale`` reads its CPU time)."""
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self._proc.is_alive()

    # --- the parent's side of the pipe ------------------------------------------------------
    def _figure(self, name: str) -> Any:
        return self._final[name] if self._final is not None else self._ask(name)

    def _ask(self, name: str, *args: Any) -> Any:
        reply: Future = Future()
        self._post("query", reply, (name, args))
        return reply.result(QUERY_SECONDS)

    def _post(self, kind: str, future: Future, payload: tuple) -> None:
        """Queue a message; the sender wakes only when the outbox was empty."""
        with self._lock:
            if self._dead:
                future.set_exception(WorkLost("the simulated machine is gone"))
                return
            key = next(self._ids)
            self._waiting[key] = future
            self._outbox.append((kind, key, *payload))
            if len(self._outbox) == 1:
                self._wake.notify()

    def _after(self, deps: list[Future], node_type: str, call: Call, future: Future) -> None:
        """Send a chained call once its futures are done, with their results in its args
        (``DependencyFailed`` if one failed, as ``SimulatedBackend`` does)."""
        left, lock = [len(deps)], threading.Lock()

        def one_done(_: Future) -> None:
            with lock:
                left[0] -= 1
                if left[0]:
                    return
            failed = [d for d in deps if d.exception() is not None]
            if failed:
                future.set_exception(DependencyFailed(str(failed[0].exception())))
                return
            args = tuple(a.result() if isinstance(a, Future) else a for a in call.args)
            ready = replace(call, args=args, inputs=())
            self._post("task", future, (node_type, ready))

        for d in deps:
            d.add_done_callback(one_done)

    def _send_loop(self) -> None:
        while True:
            with self._lock:
                while not self._outbox and not self._dead:
                    self._wake.wait()
                if self._dead:
                    return
                items, self._outbox = self._outbox, deque()
            wire: list[tuple] = []
            for item in items:
                if item[0] == "task":
                    _, key, node_type, call = item
                    args = tuple(self._plan_ref(a, wire) for a in call.args)
                    item = ("task", key, node_type, replace(call, args=args, inputs=()))
                wire.append(item)
            try:
                self._conn.send(wire)
            except (OSError, ValueError):
                return  # the child is gone: the receiver sees EOF

    def _plan_ref(self, arg: Any, wire: list[tuple]) -> Any:
        if not isinstance(arg, RangePlan):
            return arg
        key = id(arg)
        if key not in self._plans:
            self._plans[key] = arg
            wire.append(("plan", key, arg))
        return _PlanRef(key)

    def _recv_loop(self) -> None:
        while True:
            try:
                batch = self._conn.recv()
            except (EOFError, OSError):
                self._died("the simulated machine's process ended")
                return
            with self._lock:  # (once per batch: the driver thread takes this lock too)
                settled = [(self._waiting.pop(key, None), ok, value) for key, ok, value in batch]
            for future, ok, value in settled:
                if future is not None:
                    _settle(future, ok, value)

    def _died(self, why: str) -> None:
        """Everything still waiting comes back lost; later posts fail at once."""
        with self._lock:
            self._dead = True
            waiting, self._waiting = self._waiting, {}
            self._wake.notify_all()
        for future in waiting.values():
            _settle(future, False, WorkLost(why))


def _settle(future: Future, ok: bool, value: Any) -> None:
    with contextlib.suppress(InvalidStateError):  # (cancelled meanwhile)
        future.set_result(value) if ok else future.set_exception(value)


def _picklable(key: int, ok: bool, value: Any) -> tuple[int, bool, Any]:
    try:
        pickle.dumps(value)
    except Exception as exc:
        return key, False, RuntimeError(f"result of task {key} would not pickle: {exc!r}")
    return key, ok, value


# --- the child's side ---------------------------------------------------------------------
def _serve(conn: Any, node_types: dict, faults: SimFaults, seed: int, offset: float) -> None:
    """The child: the machine, its commands in order, and one sender of replies."""
    sim = SimulatedBackend(node_types, faults, seed=seed, clock="real", clock_offset=offset)
    out: deque[tuple] = deque()
    wake = threading.Condition()
    closing = [False]

    def reply(key: int, ok: bool, value: Any) -> None:
        with wake:
            out.append((key, ok, value))
            if len(out) == 1:
                wake.notify()

    def done(key: int, f: Future) -> None:
        exc = f.exception()
        reply(key, exc is None, f.result() if exc is None else exc)

    def send_loop() -> None:
        while True:
            with wake:
                while not out and not closing[0]:
                    wake.wait()
                batch = list(out)
                out.clear()
            if batch:
                try:
                    conn.send(batch)
                except (OSError, ValueError):
                    return  # the parent is gone
                except Exception:  # something would not pickle: it fails alone, as an error
                    conn.send([_picklable(*item) for item in batch])
            elif closing[0]:
                return

    sender = threading.Thread(target=send_loop, name="sim-replies", daemon=True)
    sender.start()
    plans: dict[int, RangePlan] = {}
    try:
        while True:
            for item in conn.recv():
                kind, key = item[0], item[1]
                if kind == "plan":
                    plans[key] = item[2]
                elif kind == "task":
                    node_type, call = item[2:]
                    args = tuple(plans[a.key] if isinstance(a, _PlanRef) else a for a in call.args)
                    future = sim.submit(node_type, replace(call, args=args))
                    future.add_done_callback(lambda f, key=key: done(key, f))
                elif kind == "query":
                    name, args = item[2:]
                    try:
                        value = getattr(sim, name)
                        reply(key, True, value(*args) if callable(value) else value)
                    except Exception as exc:
                        reply(key, False, exc)
                elif kind == "close":
                    return
    except EOFError:
        pass  # the parent is gone
    finally:
        sim.close()
        with wake:
            closing[0] = True
            wake.notify()
        sender.join()
        conn.close()
