"""`build --cpu-kernels ours`: tiny engines whose MoE layers, LM head and attention projections are our library's
nodes, for every expert dtype, through parity against mixtral_ref (parity's own tolerances: fp32 1e-4 on logits,
int8-activation engines 2e-2; the bf16 engine against the reference with its experts and the linears our ops run
rounded to bf16), `--cpu-linears`, and the build's one-line errors."""

from __future__ import annotations

import json

import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.manifest import Manifest, sha256
from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.cpu_kernels_build import DEFAULT_LINEARS
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.plugins import cpu_kernels
from support.cpu_kernels import library_or_skip
from support.engines import tiny_checkpoint

OPS = {"fp32": "MoE", "bf16": "MoEBF16", "int8": "MoEQ", "int4": "MoEQ"}
LINEAR_OPS = {"fp32": "Linear", "bf16": "LinearBF16", "int8": "LinearQ", "int4": "LinearQ"}
FORMAT = {"fp32": "fp32", "bf16": "bf16", "int8": "quantized", "int4": "quantized"}  # the tiny exports' dense linears
PROJECTIONS = 2 * 4  # tiny: 2 layers x wq, wk, wv, wo


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    library_or_skip()
    root = tmp_path_factory.mktemp("cpu-kernels")
    checkpoint = tiny_checkpoint(root)
    out = {}
    for quantize in (None, "int8", "int4"):
        out[quantize or "fp32"] = export_checkpoint(checkpoint, root / f"onnx-{quantize}", max_seq=128, max_batch=2,
                                                    quantize_experts=quantize, debug_outputs=True)
    return checkpoint, root, out


def _nodes(engine_dir) -> list[tuple[str, str]]:
    import onnx

    model = onnx.load(str(engine_dir / "model.onnx"), load_external_data=False)
    return [(n.domain, n.op_type) for n in model.graph.node]


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8", "int4"])
def test_engine_with_our_kernels_passes_parity(exports, dtype):
    from mixtral_trt.parity.run import check_engine

    checkpoint, root, onnx_dirs = exports
    options = {"expert_dtype": "bf16"} if dtype == "bf16" else {}
    engine = build_engine(onnx_dirs["fp32" if dtype == "bf16" else dtype], root / f"engine-{dtype}", "ort", **options)
    info = Manifest.load(engine).backend_info
    kernels = info["cpu_kernels"]
    linears = DEFAULT_LINEARS[FORMAT[dtype]]
    ops = sorted([OPS[dtype], *([LINEAR_OPS[dtype]] if linears else [])])
    assert info["experts"] == "cpu_kernels" and kernels["ops"] == ops and kernels["linears"] == list(linears), info
    assert kernels["sha256"] == sha256(engine / kernels["library"]) == cpu_kernels.sha256_of(cpu_kernels.library_path())
    assert kernels["isa"] in kernels["supported_isas"]
    assert info.get("expert_weights") == ("bf16" if dtype == "bf16" else None)
    assert info.get("linear_weights") == ("bf16" if dtype == "bf16" and linears else None)
    genai = json.loads((engine / "genai_config.json").read_text())
    assert genai["model"]["decoder"]["session_options"]["custom_ops_library"] == kernels["library"]
    nodes = _nodes(engine)
    assert nodes.count((cpu_kernels.DOMAIN, OPS[dtype])) == 2, nodes  # one node per layer, nothing per expert
    assert not [n for n in nodes if n[1] in ("MoE", "QMoE") and n[0] == "com.microsoft"]
    want = ("lm_head" in linears) + PROJECTIONS * ("projections" in linears)
    assert nodes.count((cpu_kernels.DOMAIN, LINEAR_OPS[dtype])) == want, nodes
    if dtype in ("int8", "int4"):  # the linears ours does not run stay MatMulNBits
        assert nodes.count(("com.microsoft", "MatMulNBits")) == 1 + PROJECTIONS - want, nodes
    report = check_engine(engine, checkpoint, greedy_steps=8)
    assert not report.failures, report.failures
    if dtype == "bf16":
        assert report.quantization["scheme"] == ("experts+linears-bf16" if linears else "experts-bf16")


@pytest.mark.parametrize(("dtype", "linears", "count"), [("int8", "lm_head,projections", 1 + PROJECTIONS),
                                                         ("int4", "lm_head", 1), ("fp32", "projections", PROJECTIONS),
                                                         ("fp32", "lm_head", 1), ("int4", "none", 0)])
def test_cpu_linears_picks_the_linears(exports, dtype, linears, count):
    """Our node for exactly the linears asked for (whatever the defaults), ONNX Runtime's MatMulNBits / MatMul for
    the rest; parity either way (int8 / int4: the int8-activation reference)."""
    from mixtral_trt.parity.run import check_engine

    checkpoint, root, onnx_dirs = exports
    engine = build_engine(onnx_dirs[dtype], root / f"engine-{dtype}-{linears}", "ort", cpu_linears=linears)
    nodes = _nodes(engine)
    assert nodes.count((cpu_kernels.DOMAIN, LINEAR_OPS[dtype])) == count, nodes
    if dtype != "fp32":
        assert nodes.count(("com.microsoft", "MatMulNBits")) == 1 + PROJECTIONS - count, nodes
    kernels = Manifest.load(engine).backend_info["cpu_kernels"]
    assert kernels["linears"] == ([] if linears == "none" else linears.split(",")), kernels
    assert (LINEAR_OPS[dtype] in kernels["ops"]) == bool(count), kernels
    report = check_engine(engine, checkpoint, greedy_steps=4)
    assert not report.failures, report.failures


@pytest.mark.parametrize(("dtype", "linears"), [("fp32", "projections"), ("bf16", None),
                                               ("int8", "lm_head,projections"), ("int4", None)])
def test_group_query_attention_engine_with_our_kernels(exports, dtype, linears):
    """`--backend ort-gqa` over our nodes: one GroupQueryAttention per layer reading the projections whatever runs
    them (our Linear / LinearBF16 / LinearQ, MatMulNBits, MatMul), q, k and v packed into one node of the same op
    (the op's packed query); our MoE node per layer; parity."""
    import onnx

    from mixtral_trt.parity.run import check_engine

    checkpoint, root, onnx_dirs = exports
    options = {"expert_dtype": "bf16"} if dtype == "bf16" else {}
    engine = build_engine(onnx_dirs["fp32" if dtype == "bf16" else dtype], root / f"engine-gqa-{dtype}", "ort-gqa",
                          cpu_linears=linears, **options)
    nodes = _nodes(engine)
    assert nodes.count(("com.microsoft", "GroupQueryAttention")) == 2, nodes
    assert nodes.count((cpu_kernels.DOMAIN, OPS[dtype])) == 2, nodes
    kinds = Manifest.load(engine).backend_info["cpu_kernels"]["linears"]
    packed = PROJECTIONS // 2  # per layer wqkv and wo
    want = ("lm_head" in kinds) + packed * ("projections" in kinds)
    assert nodes.count((cpu_kernels.DOMAIN, LINEAR_OPS[dtype])) == want, (kinds, nodes)
    graph = onnx.load(str(engine / "model.onnx"), load_external_data=False).graph
    weight_nodes = [n for n in graph.node if n.op_type in (LINEAR_OPS[dtype], "MatMulNBits", "MatMul")]
    assert len(weight_nodes) == 1 + packed, [n.op_type for n in weight_nodes]
    gqa = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert all(list(n.input[1:3]) == ["", ""] for n in gqa), [list(n.input) for n in gqa]
    report = check_engine(engine, checkpoint, greedy_steps=6)
    assert not report.failures, report.failures


def test_ort_kernels_on_request(exports):
    _, root, onnx_dirs = exports
    engine = build_engine(onnx_dirs["fp32"], root / "engine-ort", "ort", cpu_kernels="ort")
    assert "cpu_kernels" not in Manifest.load(engine).backend_info
    assert not (engine / "cpu_kernels.so").exists()
    assert cpu_kernels.DOMAIN not in {d for d, _ in _nodes(engine)}


def test_missing_library_is_a_one_line_error(exports, tmp_path, monkeypatch):
    _, _, onnx_dirs = exports
    monkeypatch.setenv(cpu_kernels.LIBRARY_ENV, str(tmp_path / "absent.so"))
    with pytest.raises(MixtralTrtError, match="not built: make cpu-kernels"):
        build_engine(onnx_dirs["fp32"], tmp_path / "engine", "ort", cpu_kernels="ours")
    # the default falls back to ONNX Runtime's kernels
    assert "cpu_kernels" not in Manifest.load(build_engine(onnx_dirs["fp32"], tmp_path / "e2", "ort")).backend_info


@pytest.mark.parametrize(("options", "message"), [
    ({"cpu_kernels": "mine"}, "--cpu-kernels 'mine': choose one of ours, ort"),
    ({"expert_dtype": "fp8"}, "--expert-dtype 'fp8': choose one of fp32, bf16"),
    ({"cpu_kernels": "ort", "expert_dtype": "bf16"}, "through our CPU kernels only"),
    ({"cpu_kernels": "ours", "experts": "matmul"}, "give it with --cpu-kernels ort"),
    ({"cpu_linears": "head"}, "--cpu-linears 'head': comma-separated lm_head, projections, or none"),
    ({"cpu_kernels": "ort", "cpu_linears": "lm_head"}, "--cpu-linears .* give it with --cpu-kernels ours"),
])
def test_bad_options(exports, tmp_path, options, message):
    _, _, onnx_dirs = exports
    with pytest.raises(MixtralTrtError, match=message):
        build_engine(onnx_dirs["fp32"], tmp_path / "engine", "ort", **options)


def test_bf16_experts_need_a_float_fp32_export(exports, tmp_path):
    _, _, onnx_dirs = exports
    with pytest.raises(MixtralTrtError, match="takes a float fp32 export.*fp32 quantized"):
        build_engine(onnx_dirs["int8"], tmp_path / "engine", "ort", expert_dtype="bf16")


def test_not_for_other_backends(exports, tmp_path):
    _, _, onnx_dirs = exports
    with pytest.raises(MixtralTrtError, match="--cpu-kernels applies to the ONNX Runtime backends"):
        build_engine(onnx_dirs["fp32"], tmp_path / "engine", "portable", cpu_kernels="ours")


@pytest.mark.parametrize(("library", "message"), [("../evil.so", "not a path inside the engine directory"),
                                                  ("stray.so", "'stray.so' is not among the artifacts")])
def test_manifest_cannot_point_the_runtime_at_other_code(exports, tmp_path, library, message):
    from mixtral_trt import runtime

    _, _, onnx_dirs = exports
    engine = build_engine(onnx_dirs["fp32"], tmp_path / "engine", "ort", cpu_kernels="ours")
    (engine / "stray.so").write_bytes((engine / "cpu_kernels.so").read_bytes())
    manifest = json.loads((engine / "manifest.json").read_text())
    manifest["backend_info"]["cpu_kernels"]["library"] = library
    (engine / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MixtralTrtError, match=message):
        runtime.load(engine)


def test_zero_point_experts_stay_on_onnx_runtime(tmp_path):
    """A quantized checkpoint's asymmetric codes (MoEExpertsQZ, AWQ here) are not our ops' format: the default
    build keeps ONNX Runtime's QMoE (with zero points) and passes parity; asking for ours is one line naming why."""
    from mixtral_trt.parity.run import check_engine
    from support.quant_checkpoints import write_awq

    library_or_skip()
    checkpoint = tmp_path / "awq"
    write_awq(checkpoint, 64)
    onnx_dir = export_checkpoint(checkpoint, tmp_path / "onnx", max_seq=64, max_batch=2)
    with pytest.raises(MixtralTrtError, match="--cpu-kernels ours: .*zero points"):
        build_engine(onnx_dir, tmp_path / "ours", "ort", cpu_kernels="ours")
    assert not (tmp_path / "ours").exists()
    engine = build_engine(onnx_dir, tmp_path / "engine", "ort")
    assert "cpu_kernels" not in Manifest.load(engine).backend_info
    assert ("com.microsoft", "QMoE") in _nodes(engine)
    report = check_engine(engine, checkpoint, greedy_steps=8)
    assert not report.failures, report.failures
