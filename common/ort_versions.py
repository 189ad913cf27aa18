"""Which ONNX Runtime releases run the `ort` lowering's contrib ops as it writes them.

Read from the op schemas of the wheels themselves (`get_all_operator_schema()` of onnxruntime-gpu 1.27.0,
1.28.0, 1.29.0, 1.30.0, 1.31.1 and onnxruntime 1.32.0) and the strings of their CUDA providers:

    com.microsoft::MoE                 every attribute the lowering writes exists in 1.27 and later
    com.microsoft::QMoE
      weights_prepacked                first in 1.28. Before it the CUDA kernel took codes already interleaved
                                       for its GEMM, so our raw [E, N, K*bits/8] codes would be read wrong
      accuracy_level                   first in 1.31 (int8 activations on the CPU EP; an older release refuses it)
      raw codes on the CUDA EP         1.31: the first whose CUDA QMoE chooses the SM90 or SM80 layout of its
                                       in-EP packing explicitly ("this QMoE configuration has no SM80 fallback");
                                       the packing before it gave wrong output on Hopper (SM90 layouts fed to SM80
                                       kernels). Confirmed on a GPU only by the run book's QMoE parity check
                                       (bench/gpu_check.py), which has not run here.

PyPI's newest onnxruntime-gpu is 1.31.1 (there is no 1.32 GPU wheel), and it opens models up to IR version 13.
"""

from __future__ import annotations

from functools import cache

from packaging.version import Version

from mixtral_trt.common.errors import MixtralTrtError

MS_DOMAIN = "com.microsoft"
# The runtime's floor: onnxruntime-gpu 1.31.1's CPU EP gives the `tiny` preset's fp16 MoE, fp16 int8 / int4 and
# fp32 int8 QMoE engines the same parity figures as 1.32 (logits max rel 5.5e-4, 1.1e-2, 4.7e-2 (both), 3.0e-3)
MIN_ORT = (1, 31)
CUDA_QMOE_MIN = (1, 31)  # raw QMoE codes packed correctly by the CUDA EP on SM80 and SM90
NEWEST_ONNXRUNTIME_GPU = "1.31.1"  # on PyPI when the `gpu` extra was pinned
# (op, attribute) -> the first release whose schema has it (only those added after 1.27 are listed)
ATTRIBUTE_SINCE = {
    ("QMoE", "weights_prepacked"): (1, 28),
    ("QMoE", "accuracy_level"): (1, 31),
    ("MoE", "swiglu_limit_after_activation"): (1, 32),
    ("QMoE", "swiglu_limit_after_activation"): (1, 32),
}


def _release(version: str) -> tuple[int, int]:
    return tuple(Version(version).release[:2])  # type: ignore[return-value]


def _dotted(release: tuple[int, ...]) -> str:
    return ".".join(map(str, release))


def check_ort_version(installed: str) -> None:
    if _release(installed) < MIN_ORT:
        raise MixtralTrtError(f"onnxruntime {installed} is older than {_dotted(MIN_ORT)}, the first release "
                              "whose MoE semantics mixtral-trt verified: pip install -U onnxruntime")


@cache
def installed_attributes() -> dict[str, frozenset[str]]:
    """com.microsoft op -> the attribute names the installed onnxruntime's schema knows."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    return {s.name: frozenset(s.attributes) for s in C.get_all_operator_schema() if s.domain == MS_DOMAIN}


def known(op: str, attributes: dict, schema: dict[str, frozenset[str]] | None = None) -> dict:
    """`attributes` less those the installed onnxruntime's `op` does not know (what the lowering may write)."""
    names = (schema or installed_attributes()).get(op, frozenset())
    return {k: v for k, v in attributes.items() if k in names}


def unknown_attributes(nodes, version: str, schema: dict[str, frozenset[str]] | None = None) -> list[str]:
    """Per com.microsoft node (objects with op_type, domain, attribute names in `attribute`), what `version`'s
    schema lacks, with the release that added it."""
    schema = schema or installed_attributes()
    problems = []
    for node in nodes:
        if node.domain != MS_DOMAIN or node.op_type not in schema:
            continue
        for name in sorted({a.name for a in node.attribute} - schema[node.op_type]):
            since = ATTRIBUTE_SINCE.get((node.op_type, name))
            problems.append(f"{node.op_type} attribute {name!r} (onnxruntime {version} does not know it"
                            f"{f'; first in {_dotted(since)}' if since else ''})")
    return problems


def check_engine_ops(model_path, version: str, cuda: bool, schema: dict[str, frozenset[str]] | None = None) -> None:
    """One line naming the engine file when the installed onnxruntime cannot run its contrib ops correctly:
    attributes it does not know, or QMoE on the CUDA EP before CUDA_QMOE_MIN."""
    import onnx

    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception:  # not a readable model: ONNX Runtime's own open reports it
        return
    problems = unknown_attributes(graph.node, version, schema)
    if cuda and _release(version) < CUDA_QMOE_MIN and any(
            n.domain == MS_DOMAIN and n.op_type == "QMoE" for n in graph.node):
        problems.append(f"QMoE on the CUDA EP needs onnxruntime-gpu {_dotted(CUDA_QMOE_MIN)} or newer (older "
                        "releases pack raw codes wrong on Hopper)")
    if problems:
        raise MixtralTrtError(f"{model_path}: onnxruntime {version} cannot run this engine: {'; '.join(problems)}")
