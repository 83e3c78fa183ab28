"""The package map holds: no import cycle inside minionerec/, a lower floor never imports a higher one, and no
library module imports an entry script (sft.py, rl.py, ...) or the rq/, data/, bench/ scripts."""
from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "minionerec"
# bottom to top (minionerec/__init__.py); rl and serving share the top floor
FLOORS = {"run": 0, "data": 1, "model": 2, "ranking": 3, "rl": 4, "serving": 4, "launch": 5}
SCRIPTS = {p.stem for p in ROOT.glob("*.py")} | {"rq", "data", "bench", "tests"}


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path) -> set[str]:
    """Absolute module names `path` imports (`from a.b import c` counts a.b and, when it is a module, a.b.c)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


def test_no_import_cycle():
    edges, done, stack = graph(), set(), []

    def visit(node):
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(node):] + [node]))
        if node in done:
            return
        stack.append(node)
        for dep in edges[node]:
            visit(dep)
        stack.pop()
        done.add(node)

    for node in edges:
        visit(node)


def test_lower_floors_never_import_higher_ones():
    upward = [f"{m} -> {d}" for m, deps in graph().items() for d in deps
              if floor(m) is not None and floor(d) is not None and floor(d) > floor(m)]
    assert not upward, upward


def test_the_library_imports_no_script():
    bad = [f"{module_name(p)} -> {name}" for p in PACKAGE.rglob("*.py") for name in imports_of(p)
           if name.split(".")[0] in SCRIPTS and not name.startswith("minionerec")]
    assert not bad, bad
