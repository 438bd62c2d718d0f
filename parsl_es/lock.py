"""One driver per campaign: a lock on the output directory that a dead driver cannot keep.

Two drivers on one ledger would hand out the same ranges twice. The lock is an
``flock`` on ``.driver.lock`` in the output directory: the kernel drops it when
the process holding it ends, however it ends, so a killed driver never leaves
the campaign locked. The file also says who holds it, for the refusal message.

Some file systems have no ``flock`` (Lustre mounted without ``-o flock`` or
``localflock``, some NFS setups): there the lock falls back to a *lease*, a file
``.driver.lease`` created atomically (``O_CREAT | O_EXCL``) that names its
holder (host, PID, since) and an expiry that a daemon thread of the holder
pushes forward every ``RENEW_SECONDS``. Another driver refuses while the lease
is live; a lease is stale, and may be taken over, once it has expired (its
holder stopped renewing: killed, or its node died) or when it was taken on
this host by a PID that no longer exists. The lease file is removed when the
block ends. Never does a driver run without one or the other: if neither can
be had, it refuses.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parsl_es import fileio
from parsl_es.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".driver.lock"
LEASE_NAME = ".driver.lease"
#: How long a lease stays live without renewal (s), and how often its holder renews it.
LEASE_SECONDS = 60.0
RENEW_SECONDS = 10.0
#: After taking over a stale lease, how long to wait before re-reading it to confirm
#: that no other driver took it over at the same moment (s).
TAKEOVER_SETTLE_SECONDS = 0.2
#: ``flock`` errors meaning "this file system has no file locks".
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)

_HOW_TO_PROCEED = (
    "run the campaign on a file system with file locks (e.g. Lustre mounted with "
    "'-o flock'), or make the output directory writable so a lease file can be kept there"
)


@contextlib.contextmanager
def campaign_lock(output: Path, what: str = "driver") -> Iterator[None]:
    """Hold the campaign's lock for the duration of the block, or refuse clearly."""
    output = Path(output)
    path = output / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(
            f"cannot lock the campaign: {exc.strerror} ({path}); {_HOW_TO_PROCEED}", file=output
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(_refusal(_read_holder(fd)), file=output) from None
        except OSError as exc:
            if exc.errno not in NO_FLOCK:
                raise
            log.warning("%s: file locks unsupported here (%s); using a lease file", path, exc)
            with _lease(output, what):
                yield
            return
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder | {"what": what}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _refusal(holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (
        f"another es-run {holder.get('what', 'driver')} is running this campaign ({who}, "
        f"since {since}); wait for it, or stop it (Ctrl-C, or kill -TERM {holder.get('pid')}) "
        "and resume"
    )


# --- the lease, where there is no flock ------------------------------------------------


@contextlib.contextmanager
def _lease(output: Path, what: str) -> Iterator[None]:
    lease = _Lease(output / LEASE_NAME, what)
    lease.acquire()
    try:
        yield
    finally:
        lease.release()


def read_lease(path: Path) -> dict[str, Any] | None:
    """The lease's content; None if there is none; {} if unreadable (being written)."""
    try:
        data = json.loads(Path(path).read_bytes() or b"{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lease_is_stale(holder: dict[str, Any], path: Path, now: float | None = None) -> bool:
    """Expired, or taken on this host by a process that is gone."""
    now = time.time() if now is None else now
    if not holder:  # just created and not yet written, or damaged: judge by its age
        try:
            return now - path.stat().st_mtime > LEASE_SECONDS
        except FileNotFoundError:
            return True
    if float(holder.get("expires", 0)) < now:
        return True
    if holder.get("host") == socket.gethostname():
        return not _pid_alive(int(holder.get("pid", 0)))
    return False


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Lease:
    """A lease file that its holder renews from a daemon thread."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.token = secrets.token_hex(8)
        self.holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "what": what,
            "token": self.token,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps(self.holder | {"expires": time.time() + LEASE_SECONDS}).encode()

    def acquire(self) -> None:
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                current = read_lease(self.path)
                if current is None:
                    continue  # released meanwhile: try to create it again
                if not lease_is_stale(current, self.path):
                    raise UserError(_refusal(current), file=self.path.parent) from None
                log.warning("%s: taking over a stale lease (%s)", self.path, current)
                self._write_replace()
                time.sleep(TAKEOVER_SETTLE_SECONDS)
                confirmed = read_lease(self.path)
                if not confirmed or confirmed.get("token") != self.token:
                    raise UserError(_refusal(confirmed or {}), file=self.path.parent) from None
                break
            except OSError as exc:
                raise self._cannot(exc) from None
            else:
                try:
                    os.write(fd, self._content())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                break
        else:
            raise UserError(f"could not take the campaign's lease {self.path}; try again")
        self._thread = threading.Thread(target=self._renew, name="parsl-es-lease", daemon=True)
        self._thread.start()

    def _cannot(self, exc: OSError) -> UserError:
        return UserError(
            f"cannot lock the campaign: this file system has no file locks and the lease "
            f"file {self.path.name} cannot be written ({exc.strerror}); {_HOW_TO_PROCEED}",
            file=self.path.parent,
        )

    def _write_replace(self) -> None:
        """Write the lease in full under a temporary name, then rename it into place."""
        try:
            fileio.write_with(self.path, lambda tmp: tmp.write_bytes(self._content()))
        except OSError as exc:
            raise self._cannot(exc) from None

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            current = read_lease(self.path)
            if current and current.get("token") != self.token:
                log.error("%s: the campaign's lease was taken by %s", self.path, current)
                return
            try:
                self._write_replace()
            except UserError as exc:  # keep trying: the lease lives LEASE_SECONDS
                log.warning("%s: could not renew the lease: %s", self.path, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        current = read_lease(self.path)
        if current is not None and current.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
