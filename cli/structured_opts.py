"""The options `generate` and `chat` share for constrained output (`--json`, `--json-schema`), and `chat`'s
tool options (`--tools`, `--tool-choice`), with their files read into what Engine.chat_completion takes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import read_json_object

JsonMode = Annotated[bool, typer.Option("--json", help="Reply with a JSON object (grammar-constrained).")]
JsonSchema = Annotated[Path | None, typer.Option(help="Reply with JSON matching the schema in this file.")]
Tools = Annotated[Path | None, typer.Option(
    help='JSON file: a list of tools [{"type": "function", "function": {name, description, parameters}}] '
         "(v3 tokenizer, Mixtral 8x22B).")]
ToolChoice = Annotated[str | None, typer.Option(
    "--tool-choice",
    help="auto (default with --tools) | none | any (a call is forced) | the name of the one tool to call.")]


def response_format(json_mode: bool, json_schema: Path | None) -> dict[str, Any] | None:
    if json_mode and json_schema is not None:
        raise MixtralTrtError("--json and --json-schema: give one of them")
    if json_schema is not None:
        return {"type": "json_schema", "json_schema": {"name": json_schema.stem, "schema": _read(json_schema)}}
    return {"type": "json_object"} if json_mode else None


def read_tools(path: Path | None) -> list[dict[str, Any]] | None:
    """The tools in `path`: a JSON list of tools, or an object with a "tools" list."""
    if path is None:
        return None
    data = _read(path, allow_list=True)
    tools = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(tools, list):
        raise MixtralTrtError(f"{path}: expected a list of tools (or {{\"tools\": [...]}})")
    return tools


def tool_choice(choice: str | None) -> str | dict[str, Any] | None:
    if choice is None or choice in ("auto", "none", "any", "required"):
        return choice
    return {"type": "function", "function": {"name": choice}}


def _read(path: Path, allow_list: bool = False) -> Any:
    if not path.is_file():
        raise MixtralTrtError(f"{path}: no such file")
    if not allow_list:
        return read_json_object(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MixtralTrtError(f"{path}: not valid JSON ({e})") from None
