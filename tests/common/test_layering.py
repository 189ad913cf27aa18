"""Imports run one way (docs/ARCHITECTURE.md, "Layout"): each package imports only the packages below it, and
no file imports itself back through others (no import cycle, inside a package either).

Read from the source with `ast`, so a lazy import inside a function counts as much as a top-level one.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "common": set(),
    "chat": {"common"},
    "mixtral_ref": {"common", "chat"},
    "plugins": {"common"},
    "exporter": {"common", "chat", "mixtral_ref", "plugins"},
    "runtime": {"common", "chat", "plugins"},
    "parity": {"common", "chat", "mixtral_ref", "runtime"},
    "serve": {"common", "chat", "runtime"},
    "bench": {"common", "chat", "mixtral_ref", "plugins", "exporter", "runtime", "parity", "serve"},
    "cli": {"common", "chat", "mixtral_ref", "plugins", "exporter", "runtime", "parity", "serve", "bench"},
}


def imports(path: Path, typing_only: bool = True) -> list[tuple[tuple[str, ...], list[str], int]]:
    """(module of ours as parts below mixtral_trt, the names taken from it, line) for every import in `path`,
    relative imports resolved; without `typing_only`, not those under `if TYPE_CHECKING:` (they never run)."""
    parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("runtime", "backends", "ort")
    tree = ast.parse(path.read_text(), str(path))
    skip = set()
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for statement in node.body for n in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            modules = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]  # ("runtime", "backends") for `from .` in backends/
                name = ".".join(("mixtral_trt", *base, *([node.module] if node.module else [])))
            else:
                name = node.module or ""
            modules = [(name, [alias.name for alias in node.names])]
        else:
            continue
        for name, names in modules:
            bits = tuple(name.split("."))
            if bits[0] == "mixtral_trt" and len(bits) > 1:
                found.append((bits[1:], names, node.lineno))
    return found


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(package of ours, line) for every import in `path`."""
    return {(module[0], line) for module, _, line in imports(path) if module[0] != package}


def module_file(module: tuple[str, ...]) -> Path | None:
    base = ROOT.joinpath(*module)
    return next((f for f in (base / "__init__.py", base.with_suffix(".py")) if f.is_file()), None)


def imported_files(path: Path) -> set[tuple[Path, int]]:
    """(file of ours, line) for every file an import in `path` runs: the module, a submodule named in
    `from package import name`, and the `__init__.py` of every package on the way that `path` is not in."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    own = parts[:-1]  # the packages `path` is in: their __init__.py has run before it
    found = set()
    for module, names, line in imports(path, typing_only=False):
        for target in [module, *(module + (name,) for name in names if module_file(module + (name,)))]:
            for n in range(1, len(target) + 1):
                file = module_file(target[:n])
                if file is not None and file != path and target[:n] != own[:n]:
                    found.add((file, line))
    return found


def import_cycles() -> list[list[tuple[Path, int]]]:
    """Cycles of the file-level import graph, each the shortest back to a file no earlier cycle went through,
    as its (file, line of its import of the next file) steps."""
    files = [path for package in ALLOWED for path in sorted((ROOT / package).rglob("*.py"))]
    graph = {path: sorted(imported_files(path)) for path in files}
    cycles, seen = [], set()
    for start in files:
        if start in seen:
            continue
        back = {start: None}  # breadth-first: the shortest way back to `start`
        queue, cycle = [start], None
        while queue and cycle is None:
            node = queue.pop(0)
            for target, line in graph[node]:
                if target == start:
                    cycle = [(node, line)]
                    while back[cycle[0][0]] is not None:
                        cycle.insert(0, back[cycle[0][0]])
                    break
                if target not in back:
                    back[target] = (node, line)
                    queue.append(target)
        if cycle:
            cycles.append(cycle)
            seen |= {path for path, _ in cycle}
    return cycles


@pytest.mark.parametrize("package", list(ALLOWED))
def test_imports_run_one_way(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other, line in imported_packages(path, package):
            if other not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports mixtral_trt.{other}")
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}:\n" + "\n".join(wrong)


def test_no_import_cycles():
    cycles = import_cycles()
    shown = [" -> ".join(f"{path.relative_to(ROOT)}:{line}" for path, line in cycle) for cycle in cycles[:10]]
    assert not cycles, f"{len(cycles)} import cycles (file:line of the import of the next file):\n" + "\n".join(shown)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """A cycle through an import inside a function, and one through a package's __init__.py, are found;
    an import under `if TYPE_CHECKING:` is not one."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "ALLOWED", {"pkg": set()})
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from mixtral_trt.pkg import b\n",
        "pkg/b.py": "from . import a\n",
        "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import X\n",
        "pkg/d.py": "from .c import Y\n",
        "pkg/sub/__init__.py": "from ..e import Z\n",
        "pkg/sub/x.py": "",
        "pkg/e.py": "from .sub.x import W\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = {frozenset(str(path.relative_to(tmp_path)) for path, _ in cycle) for cycle in import_cycles()}
    assert found == {frozenset({"pkg/a.py", "pkg/b.py"}), frozenset({"pkg/sub/__init__.py", "pkg/e.py"})}


def test_every_package_is_in_the_table():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "docs"}
    assert packages == set(ALLOWED)
