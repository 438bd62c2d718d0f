"""Atomic file writes and checksums.

A file is either complete under its final name or absent: writers use a
temporary name in the same directory, fsync, rename, then fsync the directory,
so the ledger can never point at a half-written output.
"""

from __future__ import annotations

import contextlib
import os
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

CHUNK = 4 * 1024 * 1024
TMP_MARK = ".tmp-"


def adler32(path: Path) -> str:
    """The ATLAS-style adler32 checksum of a file, as 8 hex digits."""
    value = 1
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def temp_path_for(final: Path) -> Path:
    """A unique temporary name beside ``final`` (same filesystem, so rename is atomic)."""
    return final.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:12]}-{final.name}")


def is_temp(path: Path) -> bool:
    return path.name.startswith(TMP_MARK)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse directory fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit_file(tmp: Path, final: Path) -> None:
    """Make ``tmp`` durable and move it to ``final`` atomically."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``final``, else it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
        commit_file(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(final: Path, text: str) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text)


def write_with(final: Path, writer: Callable[[Path], object]) -> object:
    """Run ``writer(tmp)`` and commit its file as ``final``; return what it returned."""
    with atomic_path(final) as tmp:
        return writer(tmp)


def remove_temp_files(directory: Path) -> int:
    """Delete temporary files left by writers that died, under ``directory``; how many.

    Streamed (``os.scandir``, one directory open per level): a resume passes
    directories of 10^5 merged files, and a listing held whole grows with them.
    """
    removed = 0
    try:
        entries = os.scandir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    with entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                removed += remove_temp_files(Path(entry.path))
            elif entry.name.startswith(TMP_MARK):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
