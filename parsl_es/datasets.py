"""An input dataset at submit (resolved, counted, checked) and on resume (unchanged).

A chain step may read existing files (``input: {files: [...], format: hepmc3}``)
instead of events it makes. At submit each file is counted once: its size, its
adler32 checksum and its event numbers, which must be unique across the whole
dataset (two events with one number would give two outputs the same name and
merge as one). What is recorded (``InputFile``) is what resume checks: a file
changed under a campaign would silently mix two datasets in one output.

Errors are ``UserError``: one line naming the campaign file, the field (e.g.
``chain.simul.input.files``) and its line, before anything is written.
"""

from __future__ import annotations

import glob
import importlib
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from parsl_es.dataset_plan import InputFile
from parsl_es.errors import UserError, allowed, did_you_mean, shown
from parsl_es.fileio import adler32
from parsl_es.unique_numbers import UniqueNumbers

#: The reader of each input format, as "module:function": imported only when a
#: dataset of that format is counted (the module is heavy, or may be missing).
#: A reader takes a file's path and returns its event numbers (an int64 array, in
#: file order); it raises on a file it cannot parse.
READERS: dict[str, str] = {
    "hepmc3": "parsl_es.payloads.mc.hepmc3:scan_event_numbers",
}
#: How a format is named in messages ("not a HepMC3 file").
FORMAT_NAMES: dict[str, str] = {"hepmc3": "HepMC3"}

Reader = Callable[[Path], np.ndarray]

#: A path is shown whole in a message (``shown`` cuts long values at 60 characters).
_PATH_LIMIT = 4096


def _p(path: str | Path) -> str:
    return shown(path, _PATH_LIMIT)


def reader_for(fmt: str, *, source: str | Path, field: str, line: int | None) -> Reader:
    """The reader of format ``fmt`` from ``READERS``, imported now."""
    if fmt not in READERS:
        raise UserError(
            f"unknown input format {shown(fmt)}{did_you_mean(fmt, READERS)}; "
            f"known: {allowed(READERS)}",
            file=source,
            field=field,
            line=line,
        )
    module, _, name = READERS[fmt].partition(":")
    return getattr(importlib.import_module(module), name)


def resolve(
    patterns: list[str], base: Path, source: str | Path, field: str, line: int | None
) -> list[Path]:
    """The files ``patterns`` name, in order: each a path or a glob.

    A relative entry is taken against ``base`` (the campaign file's directory,
    so a campaign means the same files wherever ``es-run`` is started); a glob's
    matches are sorted, so the dataset's order, and so every range's events, do
    not depend on the directory listing. Refused: an entry matching nothing, a
    directory or another file that is not a regular one (a FIFO would block the
    count), an unreadable file, and the same file twice (by device and inode, so
    also through a symlink, a second glob or a '..').
    """

    def error(message: str) -> UserError:
        return UserError(message, file=source, field=field, line=line)

    if not patterns:
        raise error("no input files listed")
    out: list[Path] = []
    seen: dict[tuple[int, int], Path] = {}
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.strip():
            raise error(f"entry {shown(pattern)}: a path or a glob is needed")
        if "\0" in pattern:
            raise error(f"entry {shown(pattern)}: a path cannot hold a NUL character")
        expanded = os.path.expanduser(pattern)
        literal = os.path.join(base, expanded)
        # an existing path is itself even with '[' in it; otherwise glob characters glob
        if glob.has_magic(expanded) and not os.path.lexists(literal):
            # root_dir, not base joined in: a '[' in the campaign's directory is no glob
            found = glob.glob(expanded, root_dir=base, recursive=True)
            matches = [os.path.join(base, m) for m in sorted(found)]
            if not matches:
                raise error(f"{shown(pattern)} matches no file (looked in {_p(base)})")
        else:
            matches = [literal]
        for match in matches:
            path = Path(os.path.abspath(match))
            try:
                st = path.stat()
            except FileNotFoundError:
                raise error(f"no such file {_p(path)}") from None
            except OSError as exc:
                raise error(f"{_p(path)}: {exc.strerror or exc}") from None
            if stat.S_ISDIR(st.st_mode):
                raise error(f"{_p(path)} is a directory, not a file")
            if not stat.S_ISREG(st.st_mode):  # a FIFO or a device: reading could block
                raise error(f"{_p(path)} is not a regular file")
            if not os.access(path, os.R_OK):
                raise error(f"{_p(path)} is not readable")
            key = (st.st_dev, st.st_ino)
            if key in seen:
                first = seen[key]
                also = "" if first == path else f" (the same file as {_p(first)})"
                raise error(f"{_p(path)} is listed twice{also}")
            seen[key] = path
            out.append(path)
    return out


def count(
    paths: Sequence[Path],
    read_numbers: Reader,
    *,
    fmt: str,
    source: str | Path,
    field: str,
    line: int | None,
) -> tuple[InputFile, ...]:
    """Count a dataset: each file's size, checksum and events, numbers unique throughout.

    ``paths`` are ``resolve``'s. Each file is counted once: a pass for its
    checksum and the reader's pass for its event numbers (the reader is chosen
    by the caller from ``READERS`` for the step's format, and takes a path).

    Refused: an empty file, a file ``read_numbers`` cannot parse (it raises; the
    message says "not a <format> file"), a file with no events, and an event
    number that appears twice, within a file or across two (both are named).

    Memory is bounded by the largest single file, not the dataset: a file's
    numbers are held (16 bytes a number: the array and its sorted copy) while it
    is counted, and the numbers seen live on disk until compared; about 16 bytes x
    the largest file's events + 20 MB (``parsl_es.unique_numbers``).
    """
    name = FORMAT_NAMES.get(fmt, fmt)

    def error(message: str) -> UserError:
        return UserError(message, file=source, field=field, line=line)

    out = []
    with UniqueNumbers() as seen:
        for path in paths:
            try:
                size = path.stat().st_size
                if size == 0:
                    raise error(f"{_p(path)} is empty")
                checksum = adler32(path)
            except OSError as exc:
                raise error(f"{_p(path)}: {exc.strerror or exc}") from None
            try:
                numbers = np.asarray(read_numbers(path), dtype=np.int64)
            except (UserError, MemoryError):
                raise
            except Exception as exc:
                raise error(f"{_p(path)}: not a {name} file ({_reason(exc)})") from None
            if numbers.ndim != 1 or len(numbers) == 0:
                raise error(f"{_p(path)}: no events in this {name} file")
            twice = seen.add(numbers)
            if twice is not None:
                raise error(f"event number {twice} appears twice in {_p(path)}")
            out.append(InputFile(str(path), size, checksum, len(numbers)))
            del numbers
        clash = seen.clash()
    if clash is not None:
        number, first, second = clash
        raise error(
            f"event number {number} appears in both {_p(paths[first])} "
            f"and {_p(paths[second])}; event numbers must be unique in a dataset"
        )
    return tuple(out)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_unchanged(files: tuple[InputFile, ...]) -> None:
    """On resume: every file of the dataset still has the size and checksum recorded.

    Sizes are checked for all files first (a stat each), so a changed size is
    found before any file is read for its checksum.
    """
    for f in files:
        try:
            size = os.stat(f.path).st_size
        except FileNotFoundError:
            raise UserError(
                "input file is gone since the campaign was submitted", file=f.path
            ) from None
        except OSError as exc:
            raise UserError(
                f"input file cannot be read: {exc.strerror or exc}", file=f.path
            ) from None
        if size != f.size:
            raise UserError(
                f"input file changed since the campaign was submitted: "
                f"size {size} bytes, recorded {f.size}",
                file=f.path,
            )
    for f in files:
        try:
            checksum = adler32(Path(f.path))
        except OSError as exc:
            raise UserError(
                f"input file cannot be read: {exc.strerror or exc}", file=f.path
            ) from None
        if checksum != f.checksum:
            raise UserError(
                f"input file changed since the campaign was submitted: "
                f"adler32 {checksum}, recorded {f.checksum}",
                file=f.path,
            )
