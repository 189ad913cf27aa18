"""`manifest.json`: what an engine directory holds and how it was built.

`build` writes it; `runtime.load` reads it, checks that every artifact is present with the recorded
size and sha256, and opens the backend it names.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import confined_name, opened_files
from .backends import BACKENDS
from .contract import GraphContract
from .errors import MixtralTrtError
from .fileio import read_json_object

MANIFEST_FILE = "manifest.json"
FORMAT = "mixtral-trt.engine/1"


def sha256(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    backend: str
    contract: GraphContract
    model_file: str  # the file the backend opens (model.onnx or a TensorRT plan)
    artifacts: dict[str, Artifact]
    tool_versions: dict[str, str]
    created: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())
    backend_info: dict[str, Any] = field(default_factory=dict)  # e.g. TensorRT version, compute capability

    @property
    def dtype(self) -> str:
        return self.contract.dtype

    @classmethod
    def for_directory(cls, directory: str | Path, backend: str, contract: GraphContract, model_file: str,
                      tool_versions: dict[str, str], backend_info: dict[str, Any] | None = None) -> Manifest:
        """Hash every file in `directory` and its subdirectories (a tensor-parallel engine's rank{r}/)."""
        directory = Path(directory)
        artifacts = {p.relative_to(directory).as_posix(): Artifact(sha256(p), p.stat().st_size)
                     for p in sorted(directory.rglob("*")) if p.is_file() and p.name != MANIFEST_FILE}
        return cls(backend, contract, model_file, artifacts, tool_versions, backend_info=backend_info or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "backend": self.backend,
            "dtype": self.dtype,
            "model_file": self.model_file,
            "created": self.created,
            "tool_versions": self.tool_versions,
            "backend_info": self.backend_info,
            "artifacts": {k: {"sha256": a.sha256, "size": a.size} for k, a in self.artifacts.items()},
            "contract": self.contract.to_dict(),
        }

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | Path, verify: bool = True) -> Manifest:
        """Read and (with `verify`) check the artifacts against their recorded size and sha256."""
        directory = Path(directory)
        path = directory / MANIFEST_FILE
        if not directory.is_dir():
            raise MixtralTrtError(f"{directory}: no such engine directory")
        if not path.is_file():
            raise MixtralTrtError(f"{path}: missing; is {directory} an engine directory (mixtral-export build)?")
        d = read_json_object(path)
        if d.get("format") != FORMAT:
            raise MixtralTrtError(f"{path}: not a {FORMAT} manifest")
        try:
            manifest = cls(
                backend=d["backend"],
                contract=GraphContract.from_dict(d["contract"], source=f"{path} (contract)"),
                model_file=d["model_file"],
                artifacts={k: Artifact(v["sha256"], v["size"]) for k, v in d["artifacts"].items()},
                tool_versions=d.get("tool_versions", {}),
                created=d.get("created", ""),
                backend_info=d.get("backend_info", {}),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise MixtralTrtError(f"{path}: malformed manifest ({e!r})") from None
        if manifest.backend not in BACKENDS:
            raise MixtralTrtError(f"{path}: unknown backend {manifest.backend!r}")
        if manifest.model_file not in manifest.artifacts:
            raise MixtralTrtError(f"{path}: model_file {manifest.model_file!r} is not among the artifacts")
        for name in manifest.artifacts:  # every path confined to the engine directory (common/artifacts.py)
            confined_name(directory, name, str(path), "artifact")
        if verify:
            manifest.verify(directory)
            onnx_model = not BACKENDS[manifest.backend].tensorrt
            for name in sorted(opened_files(directory, manifest.model_file, onnx_model) - set(manifest.artifacts)):
                confined_name(directory, name, str(directory / manifest.model_file), "external data")
                raise MixtralTrtError(f"{directory / name}: read by {manifest.model_file} but not listed in "
                                      f"{MANIFEST_FILE}, so never verified; rebuild the engine")
        return manifest

    def verify(self, directory: str | Path) -> None:
        directory = Path(directory)
        for name, art in self.artifacts.items():
            p = directory / name
            if not p.is_file():
                raise MixtralTrtError(f"{p}: artifact listed in {MANIFEST_FILE} is missing")
            if p.stat().st_size != art.size:
                raise MixtralTrtError(f"{p}: size {p.stat().st_size} differs from the manifest's {art.size} "
                                      "(modified or truncated)")
            if sha256(p) != art.sha256:
                raise MixtralTrtError(f"{p}: sha256 differs from the manifest (the artifact was modified)")
