"""Command-line templates: split like a shell would, filled in, never run by a shell.

Each template is split into arguments with ``shlex.split`` *before* anything
is substituted, then every placeholder is filled with ``str.format`` inside its
own argument: a value holding spaces, quotes, ``;``, ``$(...)`` or braces
arrives as (part of) exactly one argument, literally. Checked when the campaign
is loaded, so a bad placeholder fails there rather than on a worker.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from typing import Any

#: Placeholders a simulate template may use, and the type of each value.
SIMULATE_FIELDS: dict[str, type] = {
    "input": str,
    "output": str,
    "skip": int,
    "first_event": int,
    "last_event": int,
    "n_events": int,
    "seed": int,
    "campaign_seed": int,
    "range_id": str,
    "workdir": str,
    "channel": str,
}
#: The simulate placeholders of ``mode: service``: a transform started once per worker
#: process serves many ranges, so nothing of one range can be on its command line; it
#: learns its ranges over the socket whose path is ``{channel}``. ``{campaign_seed}`` is
#: allowed (a transform deriving each event's seed needs it): a worker that gets a range
#: of another campaign seed ends its transform and starts one for that seed.
SERVICE_FIELDS = frozenset({"input", "workdir", "channel", "campaign_seed"})
#: Placeholders only ``mode: service`` has.
SERVICE_ONLY_FIELDS = frozenset({"channel"})
#: Placeholders a merge template may use.
MERGE_FIELDS: dict[str, type] = {"inputs_file": str, "output": str, "n_inputs": int, "workdir": str}


def split_template(template: str) -> list[str]:
    """The template's arguments, split as a POSIX shell would but never run by one."""
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise ValueError(f"cannot be split into arguments: {exc}") from None
    if not tokens:
        raise ValueError("is empty")
    return tokens


def token_fields(token: str) -> list[str]:
    """The placeholder names in one argument; ValueError on bad braces or non-names."""
    try:
        parsed = list(string.Formatter().parse(token))
    except ValueError as exc:
        raise ValueError(
            f"bad braces in {token!r} ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    names = []
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"placeholder {{{name}}} in {token!r} is not a plain name")
        if spec and "{" in spec:
            raise ValueError(f"nested placeholder in the format of {{{name}}} in {token!r}")
        names.append(name)
    return names


def template_fields(template: str) -> set[str]:
    """Every placeholder name a template uses."""
    return {name for token in split_template(template) for name in token_fields(token)}


def render(template: str, values: Mapping[str, Any]) -> list[str]:
    """The argument list: split first, then fill each argument on its own.

    ``str.format`` makes a single pass, so braces inside a value stay literal too.
    """
    return [token.format_map(values) for token in split_template(template)]


def check_template(template: str, fields: Mapping[str, type], what: str) -> str:
    """Reject unknown placeholders and bad format specs when the campaign is loaded."""
    used = template_fields(template)
    unknown = sorted(used - set(fields))
    if unknown:
        names = ", ".join(f"{{{n}}}" for n in unknown)
        allowed = ", ".join(f"{{{n}}}" for n in fields)
        raise ValueError(f"unknown placeholder {names} in the {what} template; allowed: {allowed}")
    sample = {name: (kind() if kind is int else "x") for name, kind in fields.items()}
    try:
        render(template, sample)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the {what} template cannot be filled in: {exc}") from None
    return template
