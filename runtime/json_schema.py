"""JSON schemas placed inside larger ones, and checked before a grammar is built from them.

A tool's parameters sit inside the schema of the list of calls, so their local references ("#",
"#/$defs/C", what pydantic writes for every enum and nested model) would resolve against the list's root.
`reroot` rewrites them to point into the place the schema is put, recursion included. `check_schema`
refuses what the grammar engine would only find out mid-reply: a chain of references that comes back to
itself (it admits no value), regex repetition counts it can only expand lazily.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mixtral_trt.common.errors import MixtralTrtError

MAX_REPEAT = 10_000  # largest {n} / {n,m} count in a `pattern`
_LITERAL = frozenset({"const", "enum", "default", "examples"})  # values, not schemas: never rewritten
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def reroot(schema: Mapping[str, Any], pointer: str) -> dict[str, Any]:
    """`schema` as it must read at JSON pointer `pointer` (e.g. "/$defs/tool_0") of a larger document: every
    local `$ref` ("#" or "#/...") made to start there. Its `$id` / `$schema` are dropped (they would move
    the base of the references)."""

    def walk(node: Any, schema_map: bool = False) -> Any:
        if isinstance(node, Mapping):
            out = {}
            for key, value in node.items():
                if schema_map:
                    out[key] = walk(value)
                elif key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
                    out[key] = "#" + pointer + value[1:]
                elif key in _LITERAL:
                    out[key] = value
                else:
                    out[key] = walk(value, key in _SCHEMA_MAPS)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return {k: v for k, v in walk(schema).items() if k not in ("$id", "$schema")}


def check_schema(schema: Any, what: str) -> None:
    """No reference loop, and every `pattern` (at any depth) with repetition counts up to MAX_REPEAT; a
    MixtralTrtError naming `what` otherwise."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            _check_chain(schema, node, what)
            pattern = node.get("pattern")
            if isinstance(pattern, str):
                for low, high in _REPEAT.findall(pattern):
                    count = max(int(low), int(high or 0))
                    if count > MAX_REPEAT:
                        raise MixtralTrtError(f"{what}: pattern {pattern[:40]!r}: repetition count {count} is "
                                              f"above {MAX_REPEAT}")
            stack.extend(v for k, v in node.items() if k not in _LITERAL)
        elif isinstance(node, list):
            stack.extend(node)


_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "$defs", "definitions"})


def _check_chain(root: Any, node: Mapping[str, Any], what: str) -> None:
    """Follow the local references from `node` while each schema on the way is nothing but a `$ref`."""
    seen: set[str] = set()
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and set(node) - _ANNOTATIONS == {"$ref"}:
        ref = node["$ref"]
        if not (ref == "#" or ref.startswith("#/")):
            return
        if ref in seen:
            raise MixtralTrtError(f"{what}: $ref {ref!r} leads back to itself: the schema admits no value")
        seen.add(ref)
        node = _resolve(root, ref[1:])


def _resolve(root: Any, pointer: str) -> Any:
    """The JSON pointer's target in `root`, or None."""
    node = root
    for part in pointer.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node
