"""The package map holds: no import cycle inside minionerec/, a lower floor never imports a higher one, no
library module imports an entry script (sft.py, rl.py, ...) or bench/, docs/architecture.md lists every module, and
only minionerec is installed."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "minionerec"
# bottom to top (minionerec/__init__.py); rl and serving share the top floor
FLOORS = {"run": 0, "data": 1, "model": 2, "ranking": 3, "rq": 3, "rl": 4, "serving": 4, "launch": 5, "prep": 5}
SCRIPTS = {p.stem for p in ROOT.glob("*.py")} | {"bench", "tests"}


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


def test_the_package_map_lists_every_module():
    """docs/architecture.md's package map names every module of minionerec/ (a newcomer finds a file there)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Package map", 1)[1].split("```", 2)[1]
    listed, package = set(), None
    for line in section.splitlines():
        if line.startswith("minionerec/"):
            package = line.split()[0].rstrip("/")
        elif line.startswith("  ") and line.split() and line.split()[0].endswith(".py"):
            listed.add(f"{package}/{line.split()[0]}")
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    assert modules - listed == set(), f"not in docs/architecture.md's package map: {sorted(modules - listed)}"
    assert listed - modules == set(), f"listed but gone: {sorted(listed - modules)}"


def test_only_minionerec_is_installed(tmp_path):
    """From outside the repository, the names of our entry scripts and folders (evaluate shadows Hugging Face's
    library; data, rl, serve, bench are common names) resolve to nothing of this project."""
    names = ["evaluate", "data", "rl", "sft", "serve", "compare", "sasrec", "recommend", "convert_dataset", "bench",
             "rq", "minionerec_trainer"]
    probe = ("import importlib.util, json, sys; "
             "print(json.dumps({n: getattr(importlib.util.find_spec(n), 'origin', None) for n in sys.argv[1:]}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe, *names], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout

    def checkout(origin: str) -> Path:  # the folder a module file or a package's __init__.py lies in
        path = Path(origin)
        return path.parent.parent if path.name == "__init__.py" else path.parent

    ours = {name: origin for name, origin in json.loads(out).items()
            if origin and (checkout(origin) / "sft.py").is_file() and (checkout(origin) / "minionerec").is_dir()}
    assert not ours, f"a checkout of this project is importable from outside it: {ours}"


def test_every_module_has_tests_found_by_its_name():
    """tests/*/test_*<module>*.py, or a row of docs/testing.md's "Where a module's tests are" naming test files
    that exist: a newcomer finds a module's tests from its name."""
    tests = {p.name for p in (ROOT / "tests").rglob("test_*.py")}
    text = (ROOT / "docs" / "testing.md").read_text().split("## Where a module's tests are", 1)[1].split("\n## ", 1)[0]
    mapped = {}
    for row in text.splitlines():
        cells = [c.strip() for c in row.strip("|").split("|")]
        if row.startswith("|") and len(cells) == 2 and cells[0].endswith(".py"):
            for module in cells[0].split(", "):
                mapped[module] = [t.split()[0].rstrip(",") for t in cells[1].split(", ") if t.startswith("test_")]
    modules = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    modules += [p.name for p in ROOT.glob("*.py")]
    unfound = [m for m in modules if not any(t.startswith("test_") and Path(m).stem in t for t in tests)
               and not mapped.get(m)]
    assert not unfound, f"no test_*<module>*.py and no row in docs/testing.md: {unfound}"
    missing = {m: t for m, files in mapped.items() for t in files if t not in tests}
    assert not missing, f"docs/testing.md names test files that do not exist: {missing}"
