"""TensorRT quick-deployable plugins (`tensorrt.plugin`) for the sparse-dispatch ops (and the quantized GEMMs):
`register_plugins` defines every plugin of `PLUGINS` through its folder's trt.py (`define(trt, trtp)`).

Per plugin: `register` (output shapes and dtypes from symbolic input shapes), `autotune` (the type
combinations of the plugin's spec and, for the GEMMs, the tile tactics of plugins/tiles.py), `aot_impl`
(the Triton kernel compiled to PTX for the build GPU, with its launch grid and scalar arguments as symbolic
expressions: the engine then runs without Python) and `impl` (a JIT fallback through the same launchers).
The ONNX parser maps a node with op_type = plugin name, `plugin_namespace` = "mixtral" and `aot` = 1 to the
AOT implementation.

TensorRT's plugin layer inspects these functions with `inspect.signature`: every `register` argument is
annotated with a class (TensorDesc, int), TensorDescs first, and `register` / `aot_impl` carry return
annotations (the number of outputs is read from `register`'s). The plugins' trt.py and their shared helpers
(trt_common.py) therefore must not use `from __future__ import annotations` (string annotations fail the
check; tests/plugins/test_trt_registry.py checks every such file), and use typing.Tuple / Union, which every
TensorRT >= 10.9 accepts. `aot_impl` receives every attribute, in registration order.

Checked on CPU against TensorRT's own plugin layer (tests/plugins/test_trt_plugin_layer.py); the engine
itself needs a GPU (tests marked `gpu`).
"""

from collections.abc import Callable

from mixtral_trt.common.errors import MixtralTrtError

from . import PLUGINS

MIN_TENSORRT = (10, 9)  # the first TensorRT with AOT quick-deployable plugins (aot_impl)
# AOT plugins leak a CUDA module on every input-shape change (NVIDIA/TensorRT#4849, reported for 11.1 and 11.2.1);
# a decoding engine changes its input shapes every step (the KV cache grows). pyproject's `gpu` extra excludes them.
LEAKING_TENSORRT = ((11, 1), (11, 2))

_DEFINED: dict[int, set[str]] = {}  # id(plugin layer module) -> plugins fully defined in it
_FAILED: dict[int, dict[str, str]] = {}  # id(plugin layer module) -> plugin -> first error


def check_tensorrt(version: str) -> None:
    """The plugins need a TensorRT with AOT plugins, minus the releases that leak them (see LEAKING_TENSORRT)."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release[:2]
    except InvalidVersion:
        raise MixtralTrtError(f"TensorRT version {version!r} is not a version number") from None
    if release < MIN_TENSORRT:
        raise MixtralTrtError(f"TensorRT {version}: the sparse-dispatch plugins are AOT plugins, which need TensorRT "
                              "10.9 or newer")
    if release in LEAKING_TENSORRT:
        raise MixtralTrtError(f"TensorRT {version} leaks a CUDA module on every input-shape change of an AOT plugin "
                              "(NVIDIA/TensorRT#4849) and decoding changes shapes every step: use TensorRT 11.0 or "
                              "11.3 and newer")


def register_plugins() -> None:
    """Register the plugins with TensorRT (`import tensorrt`) once per process, before parsing a network with
    plugin nodes or deserialising a plan that holds them. A plugin whose definition failed is never retried
    (TensorRT's plugin layer keeps half a definition): the first error is raised again."""
    import tensorrt as trt

    check_tensorrt(trt.__version__)
    import tensorrt.plugin as trtp

    key = id(trtp)
    defined, failed = _DEFINED.setdefault(key, set()), _FAILED.setdefault(key, {})
    for name, define in _definitions().items():
        if name in defined:
            continue
        if name in failed:
            raise MixtralTrtError(f"TensorRT plugin mixtral::{name} failed to register earlier in this process "
                                  f"({failed[name]}); start a new process")
        try:
            define(trt, trtp)
        except Exception as e:
            failed[name] = f"{type(e).__name__}: {e}"
            raise MixtralTrtError(f"TensorRT plugin mixtral::{name} could not be registered: {failed[name]}") from e
        defined.add(name)


def _definitions() -> dict[str, Callable]:
    """Plugin name -> its `define(trt, trtp)` (plugins/<folder>/trt.py)."""
    return {name: spec.module("trt").define for name, spec in PLUGINS.items()}
