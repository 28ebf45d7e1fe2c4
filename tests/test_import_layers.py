"""Imports inside ``maggotuba`` point one way (issue 12: no import circle).

Every ``import``, including those inside functions (which hide circles from Python
but not from a reader), is collected from the source and resolved to a module of the
package. The graph must have no cycle, and the model modules must not reach up to the
prediction, instance-loading or plug-in modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maggotuba"
UPWARD = ("maggotuba.backend", "maggotuba.predict", "maggotuba.instances", "maggotuba.finetune",
          "maggotuba.cross_validation", "maggotuba.default_model")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Package modules imported anywhere in ``path`` (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c in modules and c != name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) - {"maggotuba"} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert "maggotuba.instances" in graph["maggotuba.backend"]        # imported inside a function
    assert "maggotuba.models.tagger" in graph["maggotuba.models.bagging"]


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_cycle_finder_finds_a_planted_cycle():
    graph = import_graph()
    graph["maggotuba.models.tagger"] = graph["maggotuba.models.tagger"] | {"maggotuba.backend"}
    assert find_cycle(graph) is not None


@pytest.mark.parametrize("model", ["maggotuba.models.tagger", "maggotuba.models.bagging",
                                   "maggotuba.models.randomforest", "maggotuba.models.autoencoder",
                                   "maggotuba.models.compat"])
def test_models_do_not_reach_up(model):
    assert not import_graph()[model] & set(UPWARD)
