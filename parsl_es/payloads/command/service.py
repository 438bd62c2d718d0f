"""One long-lived transform of ``mode: service``: its process, its socket, its lifecycle.

Real transforms spend minutes initialising (geometry, conditions, physics
tables) before their first event; starting one per range pays that every time.
In service mode a worker process starts the transform once and hands it one
range after another over a Unix domain socket, in the messages of
``protocol`` (the worker listens, the transform connects to ``$PARSL_ES_CHANNEL``).

The transform must never outlive its worker: the child asks the kernel for
SIGKILL when the worker dies (``PR_SET_PDEATHSIG``, as the interchange guard
does), and a normal exit of the worker says ``No more events``, waits briefly
and then kills the transform's process group. HTEX ends its workers with
SIGTERM, then SIGKILL, at the end of a campaign: there the death signal does it.
(Inside a container the death signal reaches the runtime's process only.)

This module knows processes and sockets, not ranges' files: the payload decides
what a message means for the range it holds.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing import util as mp_util
from pathlib import Path

from parsl_es.event_service import (
    MAX_LINE,
    NO_MORE,
    ProtocolError,
    TransformMessage,
    parse_transform_line,
)
from parsl_es.payloads.command.process import _die_with_parent
from parsl_es.records import TransformStart

#: The environment variable holding the socket's path.
CHANNEL_ENV = "PARSL_ES_CHANNEL"
#: How often a wait looks whether the transform is still alive (s).
POLL_SECONDS = 0.2
#: How long a transform told ``No more events`` gets to exit before SIGKILL (s).
STOP_SECONDS = 3.0


class TransformGone(Exception):
    """The transform exited, or closed its end of the socket."""


class TransformCannotStart(Exception):
    """The transform's executable could not be run at all (not found, not executable)."""


class TransformSilent(Exception):
    """The transform said nothing within the time it was given."""


@dataclass(frozen=True, slots=True)
class ServiceStats:
    """What one worker process's service-mode transforms cost, for reports."""

    starts: int = 0
    restarts: int = 0  # starts that replaced a transform that died or was killed
    init_seconds: float = 0.0  # summed from each start to its first ``Ready for events``


class Transform:
    """A transform process and the socket it talks on; restartable after ``kill``.

    ``command(channel, workdir)`` gives the argument list (already rendered and
    wrapped for a container) for a socket path and a work directory.
    """

    def __init__(
        self,
        command: Callable[[str, Path], list[str]],
        env: dict[str, str],
        log: Path,
        workdir_parent: Path,
    ) -> None:
        self.command, self.env, self.log = command, env, log
        self.workdir_parent = workdir_parent
        self.workdir: Path | None = None
        self.log_offset = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._listener: socket.socket | None = None
        self._conn: socket.socket | None = None
        self._channel_dir: str | None = None
        self._buffer = bytearray()
        self._started = 0.0
        self.ready_once = False  # has this process asked for events yet
        self.starts: list[TransformStart] = []  # every start of this worker's transform
        self._handed = 0  # how many of them the engine has been given
        # atexit for a plain process; multiprocessing children (HTEX's workers) skip
        # atexit and run only their Finalize hooks. A weak reference: no cycle keeps it.
        ref = weakref.ref(self)
        atexit.register(_close_ref, ref)
        mp_util.Finalize(None, _close_ref, args=(ref,), exitpriority=10)

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def stats(self) -> ServiceStats:
        return ServiceStats(
            starts=len(self.starts),
            restarts=sum(s.restart for s in self.starts),
            init_seconds=sum(s.init_seconds or 0.0 for s in self.starts),
        )

    def start(self) -> None:
        """Listen on a fresh socket and start the process (not yet initialised)."""
        replaced = self._proc is not None or bool(self.starts)
        self.kill()
        # AF_UNIX paths are limited to ~107 bytes: a short private directory in /tmp
        self._channel_dir = tempfile.mkdtemp(prefix="pes-", dir="/tmp")
        channel = os.path.join(self._channel_dir, "ch")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(channel)
        self._listener.listen(1)
        self.workdir_parent.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=".work-transform-", dir=self.workdir_parent))
        argv = self.command(channel, self.workdir)
        with open(self.log, "ab") as out:
            self.log_offset = out.tell()
            out.write(
                f"=== pid {os.getpid()} starts transform in {self.workdir}: {argv}\n".encode()
            )
            out.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    shell=False,
                    cwd=self.workdir,
                    env={**self.env, CHANNEL_ENV: channel},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one group: killing it ends what it started
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                self.kill()  # the socket and its directory
                raise TransformCannotStart(f"cannot run {argv[0]!r}: {exc}") from None
            self._proc = proc
        self.pid = self._proc.pid
        self._started = time.monotonic()
        self.ready_once = False
        self.starts.append(TransformStart(started=time.time(), init_seconds=None, restart=replaced))

    def initialising_for(self) -> float:
        """Seconds since the start (meaningful until the first ``Ready``)."""
        return time.monotonic() - self._started

    def initialised(self) -> None:
        """The first ``Ready for events`` came: the end of initialisation."""
        if not self.ready_once:
            self.ready_once = True
            elapsed = time.monotonic() - self._started
            self.starts[-1] = replace(self.starts[-1], init_seconds=elapsed)

    def take_starts(self) -> list[TransformStart]:
        """Starts since last asked, for the ledger; one still initialising waits its turn."""
        end = len(self.starts) - (self.running and not self.ready_once)
        taken = self.starts[self._handed : end]
        self._handed = max(self._handed, end)
        return taken

    def receive(self, timeout: float | None = None) -> TransformMessage:
        """The next message; waits in short selects, so SIGALRM and a death end it.

        ``TransformGone`` on exit or EOF, ``TransformSilent`` after ``timeout``
        seconds, ``ProtocolError`` for garbage.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE + 1:
                raise ProtocolError(f"a line of more than {MAX_LINE} bytes")
            self._wait_readable(self._conn or self._listener, deadline)
            if self._conn is None:
                self._conn, _ = self._listener.accept()
                self._forget_channel()  # connected: nothing left in /tmp if the worker is killed
                continue
            chunk = self._conn.recv(65536)
            if not chunk:
                raise TransformGone("closed the socket")
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        try:
            text = line.decode()
        except UnicodeDecodeError:
            raise ProtocolError(f"not UTF-8: {line[:120]!r}") from None
        return parse_transform_line(text)

    def send(self, line: str) -> None:
        try:
            self._conn.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise TransformGone(f"cannot write to it: {exc}") from None

    def _wait_readable(self, sock: socket.socket, deadline: float | None) -> None:
        while True:
            readable, _, _ = select.select([sock], [], [], POLL_SECONDS)
            if readable:
                return
            code = self._proc.poll()
            if code is not None:
                raise TransformGone(f"exited with code {code}")
            if deadline is not None and time.monotonic() > deadline:
                raise TransformSilent()

    def kill(self) -> None:
        """End the process group at once and forget the socket."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
            with contextlib.suppress(OSError), open(self.log, "ab") as out:
                out.write(f"=== transform ended, exit code {self._proc.returncode}\n".encode())
        self._proc = None
        for s in (self._conn, self._listener):
            if s is not None:
                s.close()
        self._conn = self._listener = None
        self._buffer.clear()
        self._forget_channel()

    def _forget_channel(self) -> None:
        if self._channel_dir is not None:
            shutil.rmtree(self._channel_dir, ignore_errors=True)
            self._channel_dir = None

    def remove_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def close(self) -> None:
        """The worker is leaving: ``No more events``, a short wait, then the group dies."""
        if self._proc is None:
            return
        if self._conn is not None and self._proc.poll() is None:
            with contextlib.suppress(TransformGone, OSError, subprocess.TimeoutExpired):
                self.send(NO_MORE)
                self._proc.wait(STOP_SECONDS)
        self.kill()
        self.remove_workdir()


def _close_ref(ref: weakref.ref) -> None:
    transform = ref()
    if transform is not None:
        transform.close()
