"""Whether a campaign's output directory can be used, decided before anything is written.

A path Parsl cannot start workers under, a directory that holds other work, a name
the file system will refuse: each is one clear ``UserError`` naming the path.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path

from parsl_es.errors import UserError, shown
from parsl_es.ledger import LEDGER_NAME
from parsl_es.lock import LEASE_NAME, LOCK_NAME

#: What Parsl's providers cannot carry in a path: they write the run directory (for a
#: campaign, DIR/logs/parsl) into shell command lines unquoted (``bash SCRIPT``,
#: ``sbatch SCRIPT``, ``--logdir=...``), so workers would never start; and the monitoring
#: database's URL would read '#' and '%' as its own.
_SHELL_SPECIAL = re.compile(r"[\s'\"`$\\;&|<>()*?\[\]{}#%]")


def check_launchable(output: Path) -> None:
    """Refuse an output directory under whose path Parsl could not start workers."""
    found = _SHELL_SPECIAL.search(os.path.abspath(output))
    if found:
        raise UserError(
            f"the path holds {found.group()!r}, and Parsl cannot start workers under it "
            "(it puts DIR/logs/parsl into shell commands unquoted); choose a path without "
            "spaces, quotes or any of $ \\ ; & | < > ( ) * ? [ ] { } # %",
            file=output,
        )


def check_new_output(output: Path) -> None:
    """Refuse an output directory that cannot be written or holds other work.

    Every path the system would refuse later (a symlink loop or a dangling one, a
    name too long, a file in the way, a directory nobody may write to) is refused
    here, before anything is written: creating it is tried (and undone) in the
    nearest existing directory, which also catches what permission bits do not
    tell (a read-only file system, or /sys for root).
    """
    if "\0" in str(output):
        raise UserError("output directory: a path cannot hold a NUL character", file=output)
    found = _stat(output)
    if found is not None:
        if not stat.S_ISDIR(found.st_mode):
            raise UserError("output exists and is not a directory", file=output)
        if (output / LEDGER_NAME).exists():
            raise UserError(
                f"already holds a campaign; continue it with 'es-run resume {output}' "
                "or choose another --output",
                file=output,
            )
        if any(p.name not in (LOCK_NAME, LEASE_NAME) for p in output.iterdir()):
            raise UserError("output directory is not empty; choose a new one", file=output)
        target = output
    else:
        target = output.parent
        while (found := _stat(target)) is None:
            target = target.parent
        if not stat.S_ISDIR(found.st_mode):
            raise UserError(
                f"cannot create output directory: {target} is not a directory", file=output
            )
        _check_new_names(output, target)
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserError(f"output directory is not writable ({target})", file=output)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".es-run-probe-", dir=target))
    except OSError as exc:
        raise UserError(
            f"cannot create the output directory in {target}: {exc.strerror}", file=output
        ) from None


def _check_new_names(output: Path, existing: Path) -> None:
    """The names still to be created fit the file system (the system says so only after
    ``mkdir -p`` has made the directories before the one that does not fit)."""
    try:
        name_max = os.pathconf(existing, "PC_NAME_MAX")
        path_max = os.pathconf(existing, "PC_PATH_MAX")
    except (OSError, ValueError):  # the file system does not say: mkdir will
        return
    for part in output.parts[len(existing.parts) :]:
        if len(os.fsencode(part)) > name_max:
            raise UserError(
                f"cannot use this output path: File name too long ({shown(part)} is more than "
                f"{name_max} bytes)",
                file=output,
            )
    if len(os.fsencode(os.path.abspath(output))) >= path_max:
        raise UserError(
            f"cannot use this output path: File name too long (more than {path_max} bytes)",
            file=output,
        )


def _stat(path: Path) -> os.stat_result | None:
    """``path``'s status, following symlinks; None if nothing is there (or a file is in the
    way of one of its parents, reported at that parent); a UserError if the system refuses
    the path itself (a symlink loop, a name too long) or it is a dangling symlink."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        if path.is_symlink():
            raise UserError(
                f"a symbolic link to {shown(os.readlink(path), 200)}, which does not exist",
                file=path,
            ) from None
        return None
    except OSError as exc:
        raise UserError(f"cannot use this output path: {exc.strerror}", file=path) from None
