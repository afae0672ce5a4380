"""The import graph of tlbench, read from the source (ast, nothing is imported): no cycle among the imports
that run when a module is loaded, and models/ does not depend on data/.

`python tests/test_import_graph.py` prints the cycles of both graphs: top-level imports only, and with the
imports inside functions too (those run later, so a cycle among them does not break loading).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "tlbench"

Graph = dict[str, set[str]]


def module_names() -> dict[str, Path]:
    """Dotted name -> file of every module of tlbench (a package is named by its __init__.py)."""
    names = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it runs when the module is loaded (not inside a function,
    nor under `if TYPE_CHECKING:`, which never runs)."""

    def visit(node: ast.AST, at_load: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, at_load
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), False)
                for stmt in child.orelse:
                    yield from visit(ast.Module(body=[stmt], type_ignores=[]), at_load)
            else:
                yield from visit(child, at_load)

    yield from visit(tree, True)


def import_graph(include_function_level: bool) -> Graph:
    """Module -> the tlbench modules it imports. `from pkg import name` points at pkg.name where that is a
    module, else at pkg (whose __init__ must run)."""
    modules = module_names()
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node, at_load in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not (at_load or include_function_level):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: resolved against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return sorted(found)


def test_the_graph_sees_the_package() -> None:
    graph = import_graph(include_function_level=False)
    assert "tlbench.data.registry" in graph["tlbench.data.build"]
    assert "tlbench.data.datasets.dtd" in graph["tlbench.data.datasets"]  # `from pkg import module`
    assert "tlbench.data.datasets" in graph["tlbench.data"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_among_top_level_imports() -> None:
    assert cycles(import_graph(include_function_level=False)) == []


def test_models_do_not_import_data() -> None:
    graph = import_graph(include_function_level=True)
    offending = {
        module: sorted(t for t in targets if t == "tlbench.data" or t.startswith("tlbench.data."))
        for module, targets in graph.items()
        if module == "tlbench.models" or module.startswith("tlbench.models.")
    }
    assert {m: t for m, t in offending.items() if t} == {}


if __name__ == "__main__":
    for label, function_level in (("top-level imports", False), ("with function-level imports", True)):
        found = cycles(import_graph(function_level))
        print(f"{label}: {len(found)} cycle(s)")
        for component in found:
            print("  " + " <-> ".join(component))
