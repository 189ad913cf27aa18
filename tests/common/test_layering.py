"""Imports run one way (docs/ARCHITECTURE.md, "Layout"): each package imports only the packages below it.

Read from the source with `ast`, so a lazy import inside a function counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the packages of ours it may import (besides itself)
ALLOWED = {
    "common": set(),
    "mixtral_ref": {"common"},
    "plugins": {"common"},
    "exporter": {"common", "mixtral_ref", "plugins"},
    "runtime": {"common", "mixtral_ref", "plugins"},
    "parity": {"common", "mixtral_ref", "runtime"},
    "serve": {"common", "mixtral_ref", "runtime"},
    "bench": {"common", "mixtral_ref", "plugins", "exporter", "runtime", "parity", "serve"},
    "cli": {"common", "mixtral_ref", "plugins", "exporter", "runtime", "parity", "serve", "bench"},
}


def imported_packages(path: Path, package: str) -> set[tuple[str, int]]:
    """(package of ours, line) for every import in `path`, relative imports resolved."""
    parts = path.relative_to(ROOT).with_suffix("").parts  # e.g. ("runtime", "backends", "ort")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]  # ("runtime", "backends") for `from .` in backends/
                names = [".".join(("mixtral_trt", *base, *([node.module] if node.module else [])))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            bits = name.split(".")
            if bits[0] == "mixtral_trt" and len(bits) > 1 and bits[1] != package:
                found.add((bits[1], node.lineno))
    return found


@pytest.mark.parametrize("package", list(ALLOWED))
def test_imports_run_one_way(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for other, line in imported_packages(path, package):
            if other not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports mixtral_trt.{other}")
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'nothing of ours'}:\n" + "\n".join(wrong)


def test_every_package_is_in_the_table():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "docs"}
    assert packages == set(ALLOWED)
