"""Path safety: what an output may replace, and which files an input directory may hand us.

Outputs (`check_output_dir`): an output directory is never the current, home or root directory (or a
parent of one), and never is, contains or lies inside an input. `--force` replaces only a directory this
tool wrote, recognised by its own metadata, never by its name (`written_by_this_tool`):
  - an export: `graph.json` whose "format" is one of mixtral-trt's;
  - an engine: `manifest.json` whose "format" is one of mixtral-trt's;
  - compiled plugin kernels: `kernels.json` whose "format" is one of mixtral-trt's;
  - recorded plugin launches (`make device-check-launches`): `launches.json`, likewise;
  - a checkpoint written by `init` / `save_checkpoint`: the small hidden file `.mixtral-trt.json` they put
    beside the weights (CHECKPOINT_MARKER; safetensors metadata cannot carry it: the library writes its
    keys in a random order, and checkpoints must stay byte-identical for a seed).

Inputs (`confined`): every file read from a checkpoint, export or engine directory must resolve inside it,
so a symbolic link cannot make us copy, hash or serve a file from elsewhere (`tokenizer.model ->
/etc/passwd`). One exception: the Hugging Face hub cache, whose snapshot files are links into the
repository's own `blobs/` folder (`models--org--name/snapshots/<rev>/x -> ../../blobs/<sha>`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from .errors import MixtralTrtError

FORMAT_PREFIX = "mixtral-trt."  # "format" of graph.json, manifest.json, kernels.json, CHECKPOINT_MARKER
CHECKPOINT_MARKER = ".mixtral-trt.json"
CHECKPOINT_FORMAT = "mixtral-trt.checkpoint/1"
MARKED_JSON = ("graph.json", "manifest.json", "kernels.json", "launches.json", CHECKPOINT_MARKER)


# ---- what this tool wrote ---------------------------------------------------------------------------
def _json_format(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("format") if isinstance(data, dict) and isinstance(data.get("format"), str) else None


def mark_checkpoint(directory: str | Path) -> None:
    """Write CHECKPOINT_MARKER into a checkpoint directory being written (so --force may replace it later)."""
    (Path(directory) / CHECKPOINT_MARKER).write_text(json.dumps({"format": CHECKPOINT_FORMAT}) + "\n")


def written_by_this_tool(directory: str | Path) -> bool:
    """Whether `directory` holds an output of mixtral-export (see the module docstring)."""
    directory = Path(directory)
    for name in MARKED_JSON:
        fmt = _json_format(directory / name)
        if fmt is not None and fmt.startswith(FORMAT_PREFIX):
            return True
    return False


# ---- outputs ----------------------------------------------------------------------------------------
def _within(path: Path, parent: Path) -> bool:
    """path == parent or path lies below parent (both resolved)."""
    return path == parent or parent in path.parents


def _home() -> Path | None:
    try:
        return Path(os.path.realpath(Path.home()))
    except (RuntimeError, KeyError):  # no HOME and no passwd entry
        return None


def check_output_dir(out: str | Path, inputs: Iterable[str | Path] = (), what: str = "output") -> Path:
    """Refuse, in one line, an output directory whose replacement would destroy what the user owns.

    Refused: the current directory or one of its parents, the root, the home directory or one of its
    parents, and a directory that is, contains or lies inside one of `inputs` (directories or files).
    Symbolic links are resolved first. Returns `out`.
    """
    out = Path(out)
    real = Path(os.path.realpath(out))
    if _within(Path(os.path.realpath(os.getcwd())), real):
        raise MixtralTrtError(f"{out}: the {what} would replace the current directory; give a new directory")
    home = _home()
    if real == Path(real.anchor) or (home is not None and _within(home, real)):
        raise MixtralTrtError(f"{out}: the {what} would replace the root or home directory; give a new directory")
    for given in inputs:
        source = Path(os.path.realpath(given))
        if _within(source, real):
            relation = "is" if source == real else "contains"
            raise MixtralTrtError(f"{out}: the {what} {relation} the input {given}; choose another directory")
        if _within(real, source):
            raise MixtralTrtError(f"{out}: the {what} lies inside the input {given}; choose a directory outside it")
    return out


# ---- inputs -----------------------------------------------------------------------------------------
def _hub_blobs(directory: Path) -> Path | None:
    """`<repo>/blobs` when `directory` is a Hugging Face hub cache snapshot (`<repo>/snapshots/<rev>`)."""
    snapshots = directory.parent
    if snapshots.name == "snapshots" and snapshots.parent.name.startswith("models--"):
        return snapshots.parent / "blobs"
    return None


def confined(directory: str | Path, path: str | Path, error: type[MixtralTrtError] = MixtralTrtError) -> Path:
    """`path`, a file of `directory`, after checking that it resolves inside `directory` (links included;
    for a hub cache snapshot, inside the repository's blobs/). `error` names the file otherwise."""
    path = Path(path)
    root = Path(os.path.realpath(directory))
    real = Path(os.path.realpath(path))
    blobs = _hub_blobs(root)
    if _within(real, root) or (blobs is not None and _within(real, blobs)):
        return path
    raise error(f"{path}: leads to {real}, outside {directory} (a symbolic link?); refused: put the file itself "
                "in the directory")
