"""Which files of an engine directory the manifest may name, and which ones the backend will open.

Every name in manifest.json (`model_file`, each artifact) is a plain relative path that resolves inside the
engine directory (no `..`, no absolute path, no link leading out). Every file the backend opens is a listed
artifact, so that `Manifest.verify` hashes it: the model file, and for ONNX engines the external-data files
its tensors point to (ONNX Runtime itself refuses locations outside the model's folder).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .errors import MixtralTrtError
from .paths import confined


def confined_name(directory: Path, name: object, source: str, what: str) -> Path:
    """directory / name, for a `name` taken from manifest.json; one-line error naming it otherwise."""
    if not isinstance(name, str) or not name:
        raise MixtralTrtError(f"{source}: {what} {name!r}: expected a file name")
    parts = PurePosixPath(name).parts
    if PurePosixPath(name).is_absolute() or "\\" in name or ".." in parts or not parts:
        raise MixtralTrtError(f"{source}: {what} {name!r}: not a path inside the engine directory")

    def error(message: str) -> MixtralTrtError:
        return MixtralTrtError(f"{source}: {what} {message}")

    return confined(directory, directory / name, error)


def onnx_external_files(model: Path) -> set[str]:
    """The external-data locations of an ONNX model's tensors (initializers, constants, subgraphs, functions);
    reads only the graph, not the weights."""
    import onnx

    proto = onnx.load_model(str(model), load_external_data=False)
    found: set[str] = set()

    def tensor(t) -> None:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            found.update(kv.value for kv in t.external_data if kv.key == "location")

    def nodes(node_list) -> None:
        for n in node_list:
            for a in n.attribute:
                for t in ([a.t] if a.HasField("t") else []) + list(a.tensors):
                    tensor(t)
                for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    graph(g)

    def graph(g) -> None:
        for t in g.initializer:
            tensor(t)
        for t in g.sparse_initializer:
            tensor(t.values)
            tensor(t.indices)
        nodes(g.node)

    graph(proto.graph)
    for f in proto.functions:
        nodes(f.node)
    return found


def opened_files(directory: Path, model_file: str, onnx_model: bool) -> set[str]:
    """Names (relative to `directory`) of the files the backend opens."""
    files = {model_file}
    if onnx_model:
        base = PurePosixPath(model_file).parent
        files |= {str(base / location) for location in onnx_external_files(directory / model_file)}
    return files
