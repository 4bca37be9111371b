"""The package's import graph: one direction of data flow, no cycles.

Walks every module's imports of `modalrec.*` (top-level and inside functions; `TYPE_CHECKING`
blocks excluded because they never run) and fails on any cycle, and on a lower layer importing a
higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import modalrec

ROOT = Path(modalrec.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, known: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("modalrec"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modalrec"):
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(paths)
    graph = {}
    for name, path in paths.items():
        deps = {d for d in _imports(ast.parse(path.read_text()), known) if d in known and d != name}
        # importing a.b.c runs a/__init__ and a/b/__init__ first, but those are not edges we own here
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := dfs(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_finder_reports_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()) or [])


# Lower layers never import higher ones (data -> features -> models -> training/evaluation -> pipeline -> serving, cli).
FORBIDDEN = {
    "modalrec.data": ("modalrec.features", "modalrec.models", "modalrec.training", "modalrec.evaluation",
                      "modalrec.pipeline", "modalrec.serving", "modalrec.cli"),
    "modalrec.features": ("modalrec.models", "modalrec.training", "modalrec.evaluation", "modalrec.pipeline",
                          "modalrec.serving", "modalrec.cli"),
    "modalrec.models": ("modalrec.training", "modalrec.evaluation", "modalrec.pipeline", "modalrec.serving",
                        "modalrec.cli"),
    "modalrec.training": ("modalrec.pipeline", "modalrec.serving", "modalrec.cli"),
    "modalrec.evaluation": ("modalrec.training", "modalrec.pipeline", "modalrec.serving", "modalrec.cli"),
}


def test_layers_import_downwards_only():
    bad = []
    for module, deps in import_graph().items():
        for layer, above in FORBIDDEN.items():
            if module == layer or module.startswith(layer + "."):
                bad += [f"{module} -> {d}" for d in deps if d.startswith(above)]
    assert not bad, "\n".join(sorted(bad))
