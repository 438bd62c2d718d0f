"""Errors a user can act on: they name the file, the field and what is allowed.

The CLI turns a ``UserError`` into one line on stderr and exit code 2, with no
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from pathlib import Path

#: Characters that would break the one line of an error (newlines) or drive the
#: terminal (escape sequences); a message shows them escaped, as Python would.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: Longer words are not compared with the allowed ones (difflib's cost grows with both).
_MAX_COMPARED = 100


class UserError(Exception):
    """Bad input from a user: a file, a field, an option or a path."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.field = field
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.field}: " if self.field else ""
        return one_line(f"{where}{field}{self.message}")


class FieldError(ValueError):
    """A validator's complaint about a field below the model that raises it.

    Raised from a model-level check (a ``model_post_init`` or ``model_validator``),
    it would be reported at the model itself; ``loc`` (relative to that model)
    lets the error name the field, and its line in the file.
    """

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


def one_line(text: str) -> str:
    """``text`` with newlines and other control characters escaped (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def shown(value: object, limit: int = 60) -> str:
    """A user's value, quoted for a message: not a megabyte of it."""
    text = str(value)
    if len(text) > limit:
        return f"'{text[:limit]}...' ({len(text)} characters)"
    return f"'{text}'"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    if len(word) > _MAX_COMPARED:
        return ""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def allowed(choices: Iterable[str]) -> str:
    return ", ".join(sorted(choices))
