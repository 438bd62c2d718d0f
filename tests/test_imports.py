"""Dependencies point one way: no import circle between the project's modules, and layers.

Read with ``ast``, not imported: module-level and function-level imports count
(a function-level import is a circle that waits for its first call), imports
under ``if TYPE_CHECKING:`` do not (they never run). A package's ``__init__`` is
a node of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Where each installed package lives in the repository (pyproject's package-dir).
PACKAGE_DIRS = {
    "parsl_es": ROOT / "parsl_es",
    "parsl_es.cli": ROOT / "cli",
    "parsl_es.workflows": ROOT / "workflows",
    "parsl_es.site_configs": ROOT / "site_configs",
}
#: The front ends: they may import everything, nothing else imports them.
FRONT_ENDS = ("parsl_es.cli", "parsl_es.notebook", "parsl_es.remote", "parsl_es.api")
#: The bottom layer: durable state, the records that cross workers, the payloads.
BOTTOM = ("parsl_es.ledger", "parsl_es.records", "parsl_es.states", "parsl_es.payloads")
#: What the bottom layer must never import.
ABOVE_BOTTOM = (
    "parsl_es.engine",
    "parsl_es.backends",
    "parsl_es.run",
    "parsl_es.api",
    "parsl_es.sites",
    *FRONT_ENDS,
)


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, directory in PACKAGE_DIRS.items():
        for path in sorted(directory.rglob("*.py")):
            rel = path.relative_to(directory).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if package == "parsl_es" and parts and f"parsl_es.{parts[0]}" in PACKAGE_DIRS:
                continue  # not a real location of that package
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (those under ``if TYPE_CHECKING:`` cannot)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _target(name: str) -> str | None:
    """The project module that importing ``name`` loads (its longest known prefix)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    edges: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from pkg import name``: the submodule pkg.name if there is one, else pkg
            names = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin
                for alias in node.names
            ]
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                edges.add(target)
    return edges


GRAPH = {module: imports_of(module) for module in MODULES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(_a_cycle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components


def _a_cycle(graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """One concrete circle through a strongly connected component: a -> b -> ... -> a."""
    start = min(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    return sorted(members)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_walk_sees_the_project():
    assert {"parsl_es", "parsl_es.cli.main", "parsl_es.run", "parsl_es.api"} <= set(GRAPH)
    assert "parsl_es.api" in GRAPH["parsl_es.cli.main"]  # function-level import counted
    assert "parsl_es.cli.progress" in GRAPH["parsl_es.cli.main"]  # relative import resolved


def test_a_circle_is_found_and_type_checking_imports_are_not_edges():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
        "def f():\n    import z\n"
    )
    assert sorted(a.name for n in _imports(tree) for a in n.names) == ["TYPE_CHECKING", "y", "z"]


def test_no_import_circle():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_only_front_ends_import_front_ends():
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        if not _under(module, FRONT_ENDS) and module != "parsl_es"
        for target in sorted(targets)
        if _under(target, FRONT_ENDS)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_bottom_layer_imports_nothing_above_it():
    wrong = [
        f"{module} imports {target}"
        for module, targets in sorted(GRAPH.items())
        if _under(module, BOTTOM)
        for target in sorted(targets)
        if _under(target, ABOVE_BOTTOM)
    ]
    assert not wrong, "\n".join(wrong)
