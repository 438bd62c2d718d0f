"""Reading YAML files for users: clear errors, and the line of every field.

Campaign and site files are validated with pydantic; pydantic reports a field
path, and this module turns that path back into a line of the file so the
message points where the user has to look.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from parsl_es.errors import UserError, allowed, did_you_mean

MAX_BYTES = 1_000_000
# Aliases make a small file stand for a huge value (a "billion laughs"); anything that
# walks the value (pydantic, json) walks every copy. Count the nodes and scalar
# characters as they would be after alias expansion, before building anything.
MAX_NODES = 100_000
MAX_EXPANDED_CHARS = 10 * MAX_BYTES


def read_text(path: Path, what: str) -> str:
    """The file's text, or a UserError saying why it cannot be used."""
    if not path.exists():
        raise UserError(f"{what} not found", file=path)
    if path.is_dir():
        raise UserError(f"{what} is a directory, expected a YAML file", file=path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror}", file=path) from None
    if len(data) > MAX_BYTES:
        raise UserError(
            f"{what} is {len(data)} bytes; a YAML file this large is not one", file=path
        )
    if b"\x00" in data:
        raise UserError(f"{what} is a binary file, expected YAML text", file=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text", file=path) from None


def parse_mapping(text: str, path: Path | str, what: str) -> tuple[dict[str, Any], dict]:
    """Parse YAML text into a mapping and a map from field paths to lines.

    The document is composed into nodes, its alias-expanded size checked against
    ``MAX_NODES`` while line numbers are collected, and only then constructed.
    """
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
            lines: dict[tuple, int] = {}
            if node is not None:
                _collect_lines(node, (), lines, _Budget(path), set())
            data = loader.construct_document(node) if node is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark else None
            problem = exc.problem or str(exc)
            raise UserError(f"malformed YAML: {problem}", file=path, line=line) from None
        except yaml.YAMLError as exc:
            raise UserError(f"malformed YAML: {exc}", file=path) from None
        except RecursionError:
            raise UserError("malformed YAML: nested too deeply", file=path) from None
    finally:
        loader.dispose()
    if data is None:
        raise UserError(f"{what} is empty", file=path)
    if not isinstance(data, dict):
        raise UserError(
            f"{what} must be a mapping of keys to values, got {type(data).__name__}", file=path
        )
    return data, lines


class _Budget:
    """Nodes and scalar characters visited so far, following aliases."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
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
    node: yaml.Node, prefix: tuple, lines: dict[tuple, int], budget: _Budget, open_: set[int]
) -> None:
    budget.visit(node)
    if isinstance(node, yaml.ScalarNode):
        return
    if id(node) in open_:
        raise UserError(
            "a YAML alias refers to a node that contains it (recursive alias)",
            file=budget.path,
            line=node.start_mark.line + 1,
        )
    open_.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                budget.visit(key)
                path = (*prefix, key.value)
            else:  # a complex key (construction refuses it, but count it first)
                _collect_lines(key, prefix, {}, budget, open_)
                path = (*prefix, "?")
            lines[path] = key.start_mark.line + 1
            _collect_lines(value, path, lines, budget, open_)
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            path = (*prefix, i)
            lines[path] = value.start_mark.line + 1
            _collect_lines(value, path, lines, budget, open_)
    open_.discard(id(node))


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest known prefix of ``loc``."""
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def validation_error(
    exc: ValidationError,
    model: type[BaseModel],
    path: Path | str,
    lines: dict[tuple, int],
    prefix: tuple = (),
) -> UserError:
    """One UserError for every problem pydantic found, naming field and line."""
    problems = []
    first_line = None
    errors = _typos_first(exc.errors())
    for err in errors:
        inner, _ = _walk(model, tuple(err["loc"]))
        loc = (*prefix, *inner)
        field = ".".join(str(x) for x in loc)
        line = line_of(lines, loc)
        first_line = first_line or line
        if err["type"] == "extra_forbidden":
            _, parent = _walk(model, tuple(err["loc"])[:-1])
            fields = list(getattr(parent, "model_fields", {}))
            hint = did_you_mean(str(loc[-1]), fields)
            msg = f"unknown key '{loc[-1]}'{hint}; allowed: {allowed(fields)}"
            field = ".".join(str(x) for x in loc[:-1])
        elif err["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = _message(err)
        where = f"line {line}: " if line and len(errors) > 1 else ""
        problems.append(f"{where}{field + ': ' if field else ''}{msg}")
    text = "; ".join(problems)
    return UserError(text, file=path, line=first_line if len(problems) == 1 else None)


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
