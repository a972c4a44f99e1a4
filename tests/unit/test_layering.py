"""The import graph, read from the source: no module imports a module that imports it back (at any depth, counting
imports inside functions and under ``TYPE_CHECKING``), no service imports another, and the shared library imports
no service. Each rule is checked on a graph that breaks it, so the checker itself can fail."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "sage_ft": ROOT / "shared" / "src" / "sage_ft",
    **{p.name: p for p in sorted((ROOT / "services").glob("*/src/sage_ft_*")) if p.is_dir()},
}


def module_name(package: str, root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [package, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {
        module_name(pkg, root, path): path for pkg, root in PACKAGES.items() for path in sorted(root.rglob("*.py"))
    }
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in modules:  # ``from pkg import name``: the module that defines it
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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
            visit(node)
    return found


def crossings(graph: dict[str, set[str]]) -> list[str]:
    """Imports from one service into another, or from the shared library into a service."""
    top = {name: name.split(".")[0] for name in graph}
    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if top[a] != top[b] and top[b] != "sage_ft"
    )


def test_the_checker_finds_a_circle_and_a_crossing() -> None:
    graph = {"sage_ft.a": {"sage_ft.b"}, "sage_ft.b": {"sage_ft.c"}, "sage_ft.c": {"sage_ft.a"}, "sage_ft.d": set()}
    assert cycles(graph) == [["sage_ft.a", "sage_ft.b", "sage_ft.c"]]
    assert crossings({"sage_ft.a": {"sage_ft_x.m"}, "sage_ft_x.m": {"sage_ft.a"}}) == ["sage_ft.a -> sage_ft_x.m"]


def test_the_graph_holds_the_real_imports() -> None:
    graph = import_graph()
    assert "sage_ft_serving.pool" in graph["sage_ft_serving.manager"]
    assert "sage_ft.storage.manifest" in graph["sage_ft.storage.names"]
    assert len(graph) > 100


def test_no_module_imports_itself_back() -> None:
    assert cycles(import_graph()) == []


def test_no_service_imports_another_and_the_library_imports_none() -> None:
    assert crossings(import_graph()) == []
