"""Reading YAML files for users: clear errors, and the line of every field.

Campaign and site files are validated with pydantic; pydantic reports a field
path, and this module turns that path back into a line of the file so the
message points where the user has to look.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from parsl_es.errors import FieldError, UserError, allowed, did_you_mean, shown

# Campaign and site files are a few kilobytes. PyYAML's pure-Python scanner takes
# about 3 s for 100 kB of the worst shape ([1,1,1,...]) and libyaml 0.3 s, so the
# limit keeps any file's refusal (or acceptance) well under 2 s either way.
MAX_BYTES = 64 * 1024
# Aliases make a small file stand for a huge value (a "billion laughs"); anything that
# walks the value (pydantic, json) walks every copy. Count the nodes and scalar
# characters as they would be after alias expansion, before building anything.
MAX_NODES = 100_000
MAX_EXPANDED_CHARS = 10 * MAX_BYTES
# An integer of a hundred digits is no count, seed or size; and Python's int() of a
# long digit string (or of a long sexagesimal 1:2:3:...) costs time quadratic in it.
MAX_NUMBER_CHARS = 100
# One error line reports this many problems of a file at most.
MAX_PROBLEMS = 5

_TAG = "tag:yaml.org,2002:"
#: libyaml's parser where PyYAML was built with it (the wheels are), else PyYAML's own.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: What YAML does not allow in a document (PyYAML's own test, here to give the line).
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_KEY_KINDS = {"int": "a number", "float": "a number", "bool": "a boolean", "null": "null"}


def exists(path: Path) -> bool:
    """Whether ``path`` exists; False for a name the system cannot even look up (too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def read_text(path: Path, what: str) -> str:
    """The file's text, or a UserError saying why it cannot be used.

    At most ``MAX_BYTES`` + 1 bytes are read: a device or a pipe that never ends
    (``/dev/zero``) is refused like a file that is too large.
    """
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{what} not found", file=path) from None
    except IsADirectoryError:
        raise UserError(f"{what} is a directory, expected a YAML file", file=path) from None
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", file=path) from None
    except ValueError:  # a NUL in the name
        raise UserError(f"cannot read {what}: its name holds a NUL character", file=path) from None
    if len(data) > MAX_BYTES:
        raise UserError(
            f"{what} is more than {MAX_BYTES} bytes; a YAML file this large is not one", file=path
        )
    if b"\x00" in data:
        raise UserError(f"{what} is a binary file, expected YAML text", file=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{what} is not UTF-8 text", file=path, line=line) from None


def parse_mapping(text: str, path: Path | str, what: str) -> tuple[dict[str, Any], dict]:
    """Parse YAML text into a mapping and a map from field paths to lines.

    The document is composed into nodes, its alias-expanded size checked against
    ``MAX_NODES`` while line numbers are collected (and duplicate keys, keys that
    are not text and numbers too long to be one refused), and only then constructed.
    """
    data, lines = _parse(text, path)
    if data is None:
        raise UserError(f"{what} is empty", file=path)
    if not isinstance(data, dict):
        raise UserError(
            f"{what} must be a mapping of keys to values, got {type(data).__name__}", file=path
        )
    return data, lines


def parse_value(text: str) -> Any:
    """One YAML value given on the command line (``--set KEY=VALUE``), checked like a file's.

    A UserError says what is wrong with it; the caller names the option.
    """
    try:
        return _parse(text, "")[0]
    except UserError as exc:
        raise UserError(exc.message, field=exc.field) from None


def _parse(text: str, path: Path | str) -> tuple[Any, dict]:
    lines: dict[tuple, int | None] = {}
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        raise UserError(
            f"malformed YAML: control character {_char(bad.group())} is not allowed",
            file=path,
            line=text.count("\n", 0, bad.start()) + 1,
        )
    loader = None
    try:
        try:
            loader = _Loader(text)
            node = loader.get_single_node()
            if node is not None:
                _collect_lines(node, (), lines, _Budget(path, loader), set())
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else None
            problem = exc.problem or str(exc)
            if "nesting depth" in problem:  # libyaml's words for what RecursionError says below
                problem = "nested too deeply"
            elif mark and _char_at(text, mark.line, mark.column) == "\t":
                problem = "a tab where YAML expects spaces (YAML indents with spaces only)"
            raise UserError(f"malformed YAML: {problem}", file=path, line=line) from None
        except yaml.YAMLError as exc:
            raise UserError(f"malformed YAML: {exc}", file=path) from None
        except RecursionError:
            raise UserError("malformed YAML: nested too deeply", file=path) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def _char_at(text: str, line: int, column: int) -> str:
    lines = text.split("\n", line + 1)
    return lines[line][column : column + 1] if line < len(lines) else ""


def _char(character: int | str) -> str:
    code = character if isinstance(character, int) else ord(character)
    return f"#x{code:04x}"


class _Budget:
    """Nodes and scalar characters visited so far, following aliases."""

    def __init__(self, path: Path | str, loader: yaml.SafeLoader) -> None:
        self.path = path
        self.loader = loader
        self.nodes = 0
        self.chars = 0

    def visit(self, node: yaml.Node) -> None:
        self.nodes += 1
        if isinstance(node, yaml.ScalarNode):
            self.chars += len(node.value)
        if self.nodes > MAX_NODES or self.chars > MAX_EXPANDED_CHARS:
            raise UserError(
                "too many aliases/nodes (YAML alias expansion): the document expands to "
                f"more than {MAX_NODES} nodes or {MAX_EXPANDED_CHARS} characters",
                file=self.path,
            )


def _collect_lines(
    node: yaml.Node,
    prefix: tuple,
    lines: dict[tuple, int | None],
    budget: _Budget,
    open_: set[int],
) -> None:
    budget.visit(node)
    if isinstance(node, yaml.ScalarNode):
        _check_scalar(node, prefix, budget)
        return
    if id(node) in open_:
        raise UserError(
            "a YAML alias refers to a node that contains it (recursive alias)",
            file=budget.path,
            line=node.start_mark.line + 1,
        )
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode):
                budget.visit(key)
                _check_key(key, prefix, seen, budget.path)
                path = (*prefix, key.value)
            else:  # a complex key (construction refuses it, but count it first)
                _collect_lines(key, prefix, {}, budget, open_)
                path = (*prefix, "?")
            lines[path] = line
            _collect_lines(value, path, lines, budget, open_)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            path = (*prefix, i)
            lines[path] = value.start_mark.line + 1
            _collect_lines(value, path, lines, budget, open_)
    open_.discard(id(node))


def _check_scalar(node: yaml.ScalarNode, prefix: tuple, budget: _Budget) -> None:
    """Numbers and dates YAML would fail to build (with a traceback) or build slowly."""
    kind = node.tag.removeprefix(_TAG)
    if kind not in ("int", "timestamp"):
        return
    problem = None
    if len(node.value) > MAX_NUMBER_CHARS:
        problem = f"a number of {len(node.value)} characters is too large to be one"
    else:
        try:  # what construction will do; a date like 2024-13-45 raises ValueError
            budget.loader.yaml_constructors[node.tag](budget.loader, node)
        except (ValueError, OverflowError) as exc:
            what = "date" if kind == "timestamp" else "number"
            problem = f"{shown(node.value)} is not a valid {what}: {exc}"
    if problem:
        raise UserError(
            problem, file=budget.path, field=_field(prefix) or None, line=node.start_mark.line + 1
        )


def _check_key(key: yaml.ScalarNode, prefix: tuple, seen: dict[str, int], path: Path | str) -> None:
    """Keys are names, each given once: YAML would let a later one silently win."""
    line = key.start_mark.line + 1
    if key.tag == _TAG + "merge":  # '<<: *defaults'
        return
    if key.tag != _TAG + "str":
        kind = _KEY_KINDS.get(key.tag.removeprefix(_TAG), "a " + key.tag.removeprefix(_TAG))
        raise UserError(
            f"key {shown(key.value)} is read by YAML as {kind}, not a name (quote it)",
            file=path,
            field=_field(prefix) or None,
            line=line,
        )
    if key.value in seen:
        raise UserError(
            f"duplicate key {shown(key.value)} (first on line {seen[key.value]}); "
            "give each key once",
            file=path,
            field=_field(prefix) or None,
            line=line,
        )
    seen[key.value] = line


def line_of(lines: dict[tuple, int | None], loc: tuple) -> int | None:
    """The line of the deepest known prefix of ``loc`` (None: set elsewhere, by ``--set``)."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | str,
    lines: dict[tuple, int | None],
    prefix: tuple = (),
) -> UserError:
    """One UserError for the problems pydantic found (the first few), naming field and line."""
    problems = []
    first_line = None
    errors = _typos_first(exc.errors())
    for err in errors[:MAX_PROBLEMS]:
        raw = (*err["loc"], *_below(err), *_discriminator(err))
        inner, _ = _walk(model, raw)
        loc = (*prefix, *inner)
        field = _field(loc)
        line = line_of(lines, loc)
        first_line = first_line or line
        if err["type"] == "extra_forbidden":
            _, parent = _walk(model, raw[:-1])
            fields = list(getattr(parent, "model_fields", {}))
            hint = did_you_mean(str(loc[-1]), fields)
            msg = f"unknown key {shown(loc[-1])}{hint}; allowed: {allowed(fields)}"
            field = _field(loc[:-1])
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = _message(err)
        where = f"line {line}: " if line and len(errors) > 1 else ""
        problems.append(f"{where}{field + ': ' if field else ''}{msg}")
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    text = "; ".join(problems)
    return UserError(text, file=path, line=first_line if len(errors) == 1 else None)


def _discriminator(err: dict) -> tuple:
    """The field that picks a union's member (a provider's ``kind``), when its value is wrong."""
    if err["type"] == "union_tag_invalid":
        return (err["ctx"]["discriminator"].strip("'"),)
    return ()


def _below(err: dict) -> tuple:
    """The field a ``FieldError`` names, below the location pydantic reports."""
    error = (err.get("ctx") or {}).get("error")
    return tuple(error.loc) if isinstance(error, FieldError) else ()


def _field(loc: tuple) -> str:
    """A field path for a message; a key too long to read is shortened."""
    return ".".join(str(x) if len(str(x)) <= 60 else shown(x) for x in loc)


def _typos_first(errors: list[dict]) -> list[dict]:
    """Unknown keys first; a missing key explained by a typo is not reported twice."""
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    missing = {e["loc"]: e for e in errors if e["type"] == "missing"}
    explained = set()
    for e in extra:
        parent, word = e["loc"][:-1], str(e["loc"][-1])
        siblings = [str(loc[-1]) for loc in missing if loc[:-1] == parent]
        for near in difflib.get_close_matches(word, siblings, n=1, cutoff=0.6):
            explained.add((*parent, near))
    rest = [e for e in errors if e["type"] != "extra_forbidden" and e["loc"] not in explained]
    return extra + rest


def _message(err: dict) -> str:
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "union_tag_invalid":
        ctx = err["ctx"]
        return f"unknown {shown(ctx['tag'])}; allowed: {ctx['expected_tags']}"
    if len(msg) > 300:  # pydantic repeats some inputs in its message
        msg = msg[:300] + "..."
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict):
        value = repr(err["input"])
        if len(value) <= 40:
            msg = f"{msg} (got {value})"
    return msg


def _is_union_tag(x: Any) -> bool:
    return isinstance(x, str) and ("[" in x or x.startswith("function-"))


def _walk(model: type[BaseModel], loc: tuple) -> tuple[tuple, Any]:
    """``loc`` without pydantic's union tags, and the model found at its end (or None).

    A dict of models (node types by name) consumes one key; a discriminated union
    (a provider's ``kind``) is resolved by the tag pydantic puts in the location.
    """
    out: list[Any] = []
    current: Any = model
    mapping = False
    members: list[Any] = []
    for part in loc:
        if _is_union_tag(part):
            continue
        if members:
            chosen = _member_tagged(members, part)
            members = []
            if chosen is not None:
                current = chosen
                continue
        out.append(part)
        if isinstance(part, int):
            continue
        if mapping:
            mapping = False
            continue
        fields = getattr(current, "model_fields", None) or {}
        if part not in fields:
            current = None
            continue
        annotation = fields[part].annotation
        mapping = get_origin(annotation) is dict
        models = _models_in(annotation)
        current = models[0] if models else None
        if len(models) > 1 and not mapping:
            members = models
    return tuple(out), current


def _member_tagged(members: list[Any], tag: Any) -> Any:
    """The union member whose literal field (its discriminator) has the value ``tag``."""
    for m in members:
        for f in m.model_fields.values():
            if get_origin(f.annotation) is Literal and tag in get_args(f.annotation):
                return m
    return None


def _models_in(annotation: Any) -> list[Any]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) or () for m in _models_in(arg)]
