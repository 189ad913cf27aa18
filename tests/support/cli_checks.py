"""Checks shared by the CLI tests: a user error is one line, and a refused command leaves files untouched."""

from __future__ import annotations

import hashlib
from pathlib import Path


def one_line_error(result, code: int, *words: str) -> None:
    """`result` (the `cli` fixture's) exited with `code` and said one line, `error: ...`, holding `words`."""
    assert result.code == code, (result.code, result.err)
    assert result.err.count("\n") == 1 and result.err.startswith("error: ") and "Traceback" not in result.err
    assert all(w in result.err for w in words), result.err


def snapshot(root: Path) -> dict[str, str]:
    """Every file below `root`: its relative path and sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
