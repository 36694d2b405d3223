"""The package's layers, read from its imports (module level and inside functions alike).

engine   plans, submits, fetches and parses; imports no view, no adapter, no notebook library
views    ``widgets/``: handed a run, they read its public attributes; import no engine module
adapters magics, accessor, polars namespaces, panel, CLI, the public ``__init__``: they only adapt
leaves    ``exceptions``, ``_secrets``, ``_env``: used by every layer, import nothing of ours
emulator  ``emulator/``: a stand-alone server; imports nothing of the product

The engine reaches the views through one lazy door: ``gemini_batch_magic.widgets``, imported
inside a function. A failure names the module, the import and the rule it breaks.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "gemini_batch_magic"
PKG = "gemini_batch_magic"
ADAPTERS = {f"{PKG}.{m}" for m in ("_magics", "_accessor", "_polars", "_panel", "cli",
                                   "_options", "_command")} | {PKG}
LEAVES = {f"{PKG}.{m}" for m in ("exceptions", "_secrets", "_env")}
DOOR = f"{PKG}.widgets"
NOTEBOOK_LIBRARIES = ("ipywidgets", "anywidget", "IPython", "ipykernel")


def _module_name(path: Path) -> str:
    parts = [PKG, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> str:
    if module in LEAVES:
        return "leaf"
    if module in ADAPTERS:
        return "adapter"
    if module == DOOR or module.startswith(DOOR + "."):
        return "view"
    if module.startswith(f"{PKG}.emulator"):
        return "emulator"
    return "engine"


def _imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import of the package,
    ``TYPE_CHECKING`` blocks left out (they never run)."""
    found: list[tuple[str, str, bool, int]] = []
    for module, path in MODULES.items():
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]

        def visit(node: ast.AST, lazy: bool, module: str = module, package: str = package
                  ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        found.append((module, alias.name, lazy, child.lineno))
                elif isinstance(child, ast.ImportFrom):
                    if child.level:
                        base = package
                        for _ in range(child.level - 1):
                            base = base.rsplit(".", 1)[0]
                        target = f"{base}.{child.module}" if child.module else base
                    else:
                        target = child.module or ""
                    for alias in child.names:  # `from . import _runs` imports a module
                        sub = f"{target}.{alias.name}"
                        found.append((module, sub if sub in MODULES else target, lazy,
                                      child.lineno))
                visit(child, inner)

        visit(ast.parse(path.read_text()), False)
    return found


IMPORTS = _imports()
OURS = [(a, b, lazy, line) for a, b, lazy, line in IMPORTS if b in MODULES and b != a]


def _where(a: str, b: str, line: int) -> str:
    return f"{MODULES[a].relative_to(ROOT.parent)}:{line} imports {b}"


def test_the_package_has_no_import_cycle_even_counting_imports_inside_functions() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _, _ in OURS:
        if b not in (a.rsplit(".", 1)[0], PKG):  # a module's own package runs before it
            graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            connect(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_engine_modules_import_no_view_adapter_or_notebook_library() -> None:
    bad = []
    for a, b, lazy, line in IMPORTS:
        if _layer(a) != "engine":
            continue
        if b.split(".")[0] in NOTEBOOK_LIBRARIES or b in NOTEBOOK_LIBRARIES:
            bad.append(_where(a, b, line) + " (a notebook library)")
        elif b in MODULES and _layer(b) == "adapter":
            bad.append(_where(a, b, line) + " (an adapter)")
        elif b in MODULES and _layer(b) == "view" and not (b == DOOR and lazy):
            bad.append(_where(a, b, line) + " (a view: only `from .widgets import` inside a "
                       "function, the one door, is allowed)")
    assert bad == [], "\n".join(bad)


def test_the_engine_uses_the_one_door_to_the_views() -> None:
    doors = {(a, b) for a, b, _, _ in OURS if _layer(a) == "engine" and _layer(b) == "view"}
    assert doors, "the engine no longer reaches the views: is the run's repr still a widget?"
    assert {b for _, b in doors} == {DOOR}


def test_views_import_no_engine_module_and_no_adapter() -> None:
    bad = [_where(a, b, line) for a, b, _, line in OURS
           if _layer(a) == "view" and _layer(b) in ("engine", "adapter")]
    assert bad == [], "\n".join(bad)


def test_leaves_import_nothing_of_the_package() -> None:
    bad = [_where(a, b, line) for a, b, _, line in OURS if _layer(a) == "leaf"]
    assert bad == [], "\n".join(bad)


def test_the_emulator_imports_nothing_of_the_product() -> None:
    bad = [_where(a, b, line) for a, b, _, line in IMPORTS
           if _layer(a) == "emulator" and (b == PKG or b.startswith(PKG + "."))
           and not b.startswith(f"{PKG}.emulator")]
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("limit", [400])
def test_no_class_is_over_400_lines(limit: int) -> None:
    big = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} is "
        f"{node.end_lineno - node.lineno + 1} lines"
        for path in MODULES.values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > limit
    ]
    assert big == [], "\n".join(big)


def test_the_scan_sees_the_imports_it_judges() -> None:
    """The checks above are only as good as the scan: it must see lazy and relative ones."""
    lazy_door = [(a, lazy) for a, b, lazy, _ in OURS if a == f"{PKG}._runs" and b == DOOR]
    assert lazy_door and all(lazy for _, lazy in lazy_door)
    assert (f"{PKG}._runs", f"{PKG}._plan") in {(a, b) for a, b, _, _ in OURS}
    assert len(MODULES) > 30
