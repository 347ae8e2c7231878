"""The layout rules of docs/contributing.rst that a machine can check, read from the source.

Inside python/gradtest/dispatch/: no module imports an underscore name from another module of the
package, no import of a gradtest module hides inside a function, and the modules' imports form no
cycle. And every public name of the lazy ``gradtest`` namespace resolves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gradtest
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "gradtest"
DISPATCH = PACKAGE / "dispatch"


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(DISPATCH.glob("*.py"))}


def _sibling_imports(tree: ast.Module) -> list[tuple[str, str, int, bool]]:
    """(sibling module, imported name, line, at module level) for each `from .x import y` and
    `from . import x` in the tree."""
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.level != 1:
            continue
        for alias in node.names:
            if node.module:
                found.append((node.module, alias.name, node.lineno, id(node) in top))
            else:
                found.append((alias.name, "", node.lineno, id(node) in top))
    return found


def _gradtest_imports_in_functions(tree: ast.Module) -> list[int]:
    lines = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level > 0:
                    lines.append(node.lineno)
                elif isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    (getattr(node, "module", None) or a.name).startswith("gradtest") for a in node.names
                ):
                    lines.append(node.lineno)
    return lines


def test_the_dispatch_package_has_its_rooms():
    assert set(_modules()) >= {"__init__", "_policy", "_report", "_core", "_signature", "_targets", "_native",
                               "_python", "_check"}


def test_no_private_name_crosses_between_dispatch_modules():
    for name, tree in _modules().items():
        for module, imported, line, _ in _sibling_imports(tree):
            assert not imported.startswith("_"), f"dispatch/{name}.py:{line} imports {module}.{imported}"


def test_no_gradtest_import_hides_in_a_function():
    for name, tree in _modules().items():
        assert _gradtest_imports_in_functions(tree) == [], f"dispatch/{name}.py imports inside a function"


def test_dispatch_modules_import_no_cycle():
    graph = {name: {m for m, _, _, _ in _sibling_imports(tree)} for name, tree in _modules().items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, "import cycle: " + " -> ".join(path + [node])
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])
    # the two leaves stay leaves
    assert graph["_policy"] == set() and graph["_report"] == set()


def test_the_checker_would_see_a_violation():
    # the rules above read the source: make sure they catch what they are meant to catch
    tree = ast.parse("from ._core import _elf\ndef f():\n    from ._native import check_native\n")
    assert [(m, n) for m, n, _, _ in _sibling_imports(tree)] == [("_core", "_elf"), ("_native", "check_native")]
    assert _gradtest_imports_in_functions(tree) == [3]


@pytest.mark.parametrize("name", gradtest.__all__)
def test_every_lazy_export_resolves(name):
    assert getattr(gradtest, name) is not None
    assert name in dir(gradtest)


def test_dispatch_report_types_are_one_family():
    from gradtest import dispatch

    assert gradtest.PythonDispatchReport is dispatch.PythonDispatchReport
    assert issubclass(dispatch.PythonDispatchReport, dispatch.DispatchReport)
