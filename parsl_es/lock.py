"""One driver per campaign: a lock on the output directory that a dead driver cannot keep.

Two drivers on one ledger would hand out the same ranges twice. The lock is an
``flock`` on ``.driver.lock`` in the output directory: the kernel drops it when
the process holding it ends, however it ends, so a killed driver never leaves
the campaign locked. The file also says who holds it, for the refusal message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from parsl_es.errors import UserError

log = logging.getLogger(__name__)

LOCK_NAME = ".driver.lock"


@contextlib.contextmanager
def campaign_lock(output: Path, what: str = "driver") -> Iterator[None]:
    """Hold the campaign's lock for the duration of the block, or refuse clearly."""
    path = Path(output) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(_refusal(fd), file=output) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            log.warning("%s: file locks unsupported here (%s); not locking", path, exc)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder | {"what": what}).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _refusal(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (
        f"another es-run {holder.get('what', 'driver')} is running this campaign ({who}, "
        f"since {since}); wait for it, or stop it (Ctrl-C, or kill -TERM {holder.get('pid')}) "
        "and resume"
    )
