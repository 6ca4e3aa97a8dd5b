"""The package's import graph: no cycles, and Redis stays at the edge.

Read from the source with :mod:`ast`, so that it sees every import a module
can make: at module level, inside functions and under ``TYPE_CHECKING``, in
the forms ``import sigbroker.x``, ``from sigbroker.x import y``, ``from .x
import y``, ``from . import x`` and ``from .. import x``. ``from P import n``
is an edge to the module ``P.n`` when there is one, else to ``P``; the parent
packages that Python initializes before a module are not edges of the cycle
check (every submodule would otherwise form a cycle with ``__init__``), but
they are followed when asking what importing a module loads. Imports by a
computed name (``import_module(name)``) are not seen: ``sigbroker/__init__``
mirrors its lazy ones with ``TYPE_CHECKING`` imports.

``sigbroker.__all__`` is checked in ``test_api.py``.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "sigbroker"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE
#: Libraries that speak to Redis: only the transport may import them.
REDIS_LIBRARIES = frozenset({"redis", "hiredis"})
#: Modules that must load, and eager sends work, with no Redis installed (DESIGN §1).
REDIS_FREE = ("signal", "naming", "routing", "config", "codec")


@dataclass(frozen=True)
class Import:
    target: str  # a module of the package, or the top-level name of a library
    runtime: bool  # runs when the importing module is imported (module level, not TYPE_CHECKING)
    line: int


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    body: list[ast.stmt], runtime: bool
) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    # Every import statement in ``body`` and below it, with whether it runs at import time.
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, runtime))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found += _nested(node, runtime=False)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            found += _import_nodes(node.body, runtime=False)
            found += _import_nodes(node.orelse, runtime)
        else:
            found += _nested(node, runtime)
    return found


def _nested(node: ast.AST, runtime: bool) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []
    for field in ast.iter_fields(node):
        value = field[1]
        statements = value if isinstance(value, list) else [value]
        found += _import_nodes([s for s in statements if isinstance(s, ast.stmt)], runtime)
        for child in statements:
            if isinstance(child, ast.expr | ast.excepthandler | ast.match_case):
                found += _nested(child, runtime)
    return found


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> list[Import]:
    """Every import in ``module``'s source: package modules, and libraries by top-level name."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = []
    for node, runtime in _import_nodes(tree.body, runtime=True):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            source = _resolve_from(module, node)
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in MODULES else source
                for alias in node.names
            ]
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                target = target.split(".")[0]
            else:
                while target not in MODULES:  # import a.b.c where c is a name in a.b
                    target = target.rpartition(".")[0]
            found.append(Import(target, runtime, node.lineno))
    return found


IMPORTS = {module: imports_of(module) for module in MODULES}


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if target in on_path:
                return [*path[path.index(target) :], target]
            if target not in done:
                cycle = visit(target)
                if cycle:
                    return cycle
        on_path.discard(path.pop())
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _edge_lines(cycle: list[str]) -> str:
    lines = []
    for here, there in itertools.pairwise(cycle):
        where = sorted({i.line for i in IMPORTS[here] if i.target == there})
        path = MODULES[here].relative_to(ROOT.parent)
        lines.append(f"  {here} -> {there}  ({path} line {', '.join(map(str, where))})")
    return "\n".join(lines)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_the_import_graph_has_no_cycle() -> None:
    graph = {
        module: {i.target for i in imports if i.target in MODULES and i.target != module}
        for module, imports in IMPORTS.items()
    }
    cycle = find_cycle(graph)
    if cycle is not None:
        reach = {module: _reachable(graph, module) for module in graph}
        tangled = sorted(m for m in reach if any(m in reach[n] for n in reach[m]))
        raise AssertionError(
            f"import cycle: {' -> '.join(cycle)}\n{_edge_lines(cycle)}\n"
            f"all modules on a cycle: {', '.join(tangled)}"
        )


def loads(module: str) -> dict[str, list[str]]:
    """What importing ``module`` loads: each module or library, with the chain that loads it.

    Follows the imports that run at import time, and the parent packages that
    Python initializes first.
    """
    chains = {module: [module]}
    todo = [module]
    while todo:
        current = todo.pop()
        targets = [i.target for i in IMPORTS.get(current, ()) if i.runtime]
        for target in _parents(current) + targets:
            if target not in chains:
                chains[target] = [*chains[current], target]
                if target in MODULES:
                    todo.append(target)
    return chains


def _is_part_of(module: str, name: str) -> bool:
    # sigbroker.codec and its submodules.
    inner = module.removeprefix(f"{PACKAGE}.")
    return inner == name or inner.startswith(f"{name}.")


def _redis_free_modules() -> list[str]:
    return [m for m in MODULES if any(_is_part_of(m, name) for name in REDIS_FREE)]


@pytest.mark.parametrize("module", _redis_free_modules())
def test_the_core_imports_no_redis(module: str) -> None:
    direct = [i for i in IMPORTS[module] if i.target in REDIS_LIBRARIES]
    assert not direct, f"{module} imports {direct[0].target} at line {direct[0].line}"
    chains = loads(module)
    for library in sorted(REDIS_LIBRARIES & chains.keys()):
        raise AssertionError(f"importing {module} loads {' -> '.join(chains[library])}")


def test_every_redis_free_module_is_checked() -> None:
    missing = [n for n in REDIS_FREE if not any(_is_part_of(m, n) for m in MODULES)]
    assert not missing, f"no module for {missing}: update REDIS_FREE"


def test_only_the_transport_imports_redis() -> None:
    # The Redis side stays behind transport/: the worker (broker.py), the
    # dispatcher, the client and the CLI speak to the Transport interface.
    outside = [
        f"{module} imports {i.target} at line {i.line}"
        for module, found in IMPORTS.items()
        if not module.startswith(f"{PACKAGE}.transport.")
        for i in found
        if i.target in REDIS_LIBRARIES
    ]
    assert outside == [], outside


def test_the_worker_and_the_dispatcher_speak_only_to_the_interface() -> None:
    # A new delivery mode is a module under transport/: the worker may know
    # the interface (transport.base), never a particular transport.
    for name in ("broker", "dispatch", "pool"):
        found = [i.target for i in IMPORTS[f"{PACKAGE}.{name}"]]
        particular = [
            t
            for t in found
            if t.startswith(f"{PACKAGE}.transport.") and t != f"{PACKAGE}.transport.base"
        ]
        assert particular == [], f"{name}.py imports {particular}"


def test_config_never_imports_the_client() -> None:
    # Not even in a function: config keeps the default client's slot, signal.py builds it.
    clients = [i for i in IMPORTS[f"{PACKAGE}.config"] if i.target == f"{PACKAGE}.client"]
    assert not clients, f"config.py imports client.py at line {clients[0].line}"


def test_the_graph_reader_sees_every_kind_of_import() -> None:
    # signal.py's imports of config, and __init__'s lazy ones under TYPE_CHECKING.
    init = {i.target: i.runtime for i in IMPORTS[PACKAGE]}
    assert init[f"{PACKAGE}.config"] is True
    assert init[f"{PACKAGE}.client"] is False
    assert init[f"{PACKAGE}.broker"] is False
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_django_app_imports_django() -> None:
    # Django is an optional extra: the core, the CLI and the transport never need it.
    outside = [
        f"{module} imports django at line {i.line}"
        for module, found in IMPORTS.items()
        if not _is_part_of(module, "contrib.django")
        for i in found
        if i.target == "django"
    ]
    assert outside == [], outside
    # The app's package re-exports the snapshots, which need no Django either.
    chains = loads(f"{PACKAGE}.contrib.django")
    assert "django" not in chains, " -> ".join(chains.get("django", []))
    for name in ("broker", "dispatch", "client", "config", "signal", "cli"):
        chains = loads(f"{PACKAGE}.{name}")
        assert "django" not in chains, " -> ".join(chains["django"])
