"""One driver per campaign, also where the file system has no ``flock`` (fast; no Parsl).

Without ``flock`` the lock is a lease file that its holder renews; the holder here
is a separate process, as a second driver would be.
"""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from parsl_es import lock
from parsl_es.errors import UserError
from parsl_es.lock import LEASE_NAME, campaign_lock

CTX = multiprocessing.get_context("fork")


def _no_flock(*_args, **_kwargs):
    raise OSError(errno.ENOLCK, "No locks available")


@pytest.fixture
def no_flock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without file locks (as Lustre mounted without -o flock)."""
    monkeypatch.setattr(fcntl, "flock", _no_flock)
    monkeypatch.setattr(lock, "TAKEOVER_SETTLE_SECONDS", 0.01)


def _hold(output: str, held, release) -> None:
    """A second driver: takes the campaign's lock and keeps it until told to stop."""
    fcntl.flock = _no_flock
    with campaign_lock(Path(output), "driver"):
        held.set()
        release.wait(60)


def _other_driver(output: Path):
    held, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_hold, args=(str(output), held, release), daemon=True)
    proc.start()
    assert held.wait(30), "the other driver did not get the lock"
    return proc, release


def _write_lease(output: Path, **fields) -> Path:
    path = output / LEASE_NAME
    holder = {"pid": 1, "host": socket.gethostname(), "since": time.time() - 100, "what": "driver"}
    path.write_text(json.dumps(holder | {"token": "theirs", "expires": time.time() + 60} | fields))
    return path


def test_without_flock_a_second_driver_in_another_process_is_refused(no_flock, tmp_path):
    proc, release = _other_driver(tmp_path)
    try:
        lease = json.loads((tmp_path / LEASE_NAME).read_text())
        assert lease["pid"] == proc.pid and lease["host"] == socket.gethostname()
        with pytest.raises(UserError) as refused, campaign_lock(tmp_path, "validate"):
            pytest.fail("ran beside another driver")
        message = str(refused.value)
        assert "another es-run driver is running this campaign" in message
        assert f"pid {proc.pid} on {socket.gethostname()}" in message
        assert f"kill -TERM {proc.pid}" in message and "since " in message
        assert refused.value.exit_code == 2
    finally:
        release.set()
        proc.join(30)
    assert proc.exitcode == 0
    assert not (tmp_path / LEASE_NAME).exists(), "the lease outlived its holder's block"
    with campaign_lock(tmp_path):  # free again
        assert (tmp_path / LEASE_NAME).exists()


def test_lease_of_a_killed_driver_on_this_host_is_taken_over(no_flock, tmp_path):
    proc, _release = _other_driver(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # its lease is still live by the clock
    proc.join(30)
    before = json.loads((tmp_path / LEASE_NAME).read_text())
    assert before["pid"] == proc.pid and before["expires"] > time.time()
    with campaign_lock(tmp_path):
        assert json.loads((tmp_path / LEASE_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LEASE_NAME).exists()


def test_dead_pid_lease_on_this_host_is_stale(no_flock, tmp_path):
    dead = CTX.Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    _write_lease(tmp_path, pid=dead.pid)
    with campaign_lock(tmp_path):
        lease = json.loads((tmp_path / LEASE_NAME).read_text())
        assert lease["pid"] == os.getpid() and lease["token"] != "theirs"


def test_expired_lease_from_another_host_is_taken_over(no_flock, tmp_path):
    _write_lease(tmp_path, host="nid001234", pid=os.getpid(), expires=time.time() - 1)
    with campaign_lock(tmp_path):
        lease = json.loads((tmp_path / LEASE_NAME).read_text())
        assert lease["host"] == socket.gethostname() and lease["pid"] == os.getpid()
    assert not (tmp_path / LEASE_NAME).exists()


def test_live_lease_from_another_host_is_respected(no_flock, tmp_path):
    # a PID that does not exist here: on another host that says nothing
    path = _write_lease(tmp_path, host="nid001234", pid=2**22 + 12345)
    with pytest.raises(UserError, match="pid 4206649 on nid001234"), campaign_lock(tmp_path):
        pytest.fail("ran beside another host's driver")
    assert json.loads(path.read_text())["token"] == "theirs", "a live lease was touched"


def test_lease_is_renewed_while_held_and_released_at_exit(no_flock, monkeypatch, tmp_path):
    monkeypatch.setattr(lock, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.1)
    path = tmp_path / LEASE_NAME
    with campaign_lock(tmp_path):
        first = json.loads(path.read_text())["expires"]
        time.sleep(1.5)  # longer than the lease: only renewal keeps it live
        later = json.loads(path.read_text())
        assert later["expires"] > first + 1.0 and later["expires"] > time.time()
        assert not lock.lease_is_stale(later, path)
    assert not path.exists()
    assert not list(tmp_path.glob(f"{LEASE_NAME}*")), "temporary lease files left"


def test_released_also_when_the_block_raises(no_flock, tmp_path):
    with pytest.raises(RuntimeError), campaign_lock(tmp_path):
        raise RuntimeError("driver failed")
    assert not (tmp_path / LEASE_NAME).exists()


def test_no_flock_and_no_lease_possible_refuses(no_flock, monkeypatch, tmp_path):
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(tmp_path)) and flags & os.O_EXCL:
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)

    (tmp_path / lock.LOCK_NAME).touch()  # the lock file exists; the lease cannot be made
    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(UserError) as refused, campaign_lock(tmp_path):
        pytest.fail("ran without a lock")
    assert refused.value.exit_code == 2
    assert "Read-only file system" in str(refused.value) and "-o flock" in str(refused.value)


def test_flock_path_is_unchanged(tmp_path):
    """With flock the kernel lock is used, and no lease file is made."""
    with campaign_lock(tmp_path):
        holder = json.loads((tmp_path / lock.LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid()
        assert not (tmp_path / LEASE_NAME).exists()
