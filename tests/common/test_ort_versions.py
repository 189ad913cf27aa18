"""Which onnxruntime releases may run the `ort` lowering's contrib ops: attributes gated on the installed
release's own op schema (oracle: onnxruntime's get_all_operator_schema), QMoE on the CUDA EP refused before
1.31, every refusal one line naming the engine file. Older releases' schemas are the attribute sets read off
the onnxruntime-gpu wheels (common/ort_versions.py)."""

from __future__ import annotations

import onnx
import pytest
from onnx import helper

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.ort_versions import ATTRIBUTE_SINCE, check_engine_ops, check_ort_version, installed_attributes
from mixtral_trt.exporter.lowering.ort_quant import activations_block, qmoe_attributes

QMOE_127 = frozenset({"activation_alpha", "activation_beta", "activation_type", "block_size", "expert_weight_bits",
                      "k", "normalize_routing_weights", "quant_type", "swiglu_fusion", "swiglu_limit",
                      "use_sparse_mixer"})
SCHEMA = {"1.27.0": {"QMoE": QMOE_127}, "1.30.0": {"QMoE": QMOE_127 | {"weights_prepacked"}},
          "1.31.1": {"QMoE": QMOE_127 | {"weights_prepacked", "accuracy_level"}}}


def test_the_installed_schema_knows_what_the_lowering_writes_and_the_table_agrees_with_it():
    import onnxruntime
    from packaging.version import Version

    schema = installed_attributes()
    for bits, block in ((8, 0), (8, 32), (4, 32)):
        assert set(qmoe_attributes(bits, block)) <= schema["QMoE"]
    assert qmoe_attributes(4, 32) == {"expert_weight_bits": 4, "weights_prepacked": 0, "block_size": 32,
                                      "accuracy_level": 4}
    installed = Version(onnxruntime.__version__).release[:2]
    for (op, name), since in ATTRIBUTE_SINCE.items():
        assert (name in schema[op]) == (installed >= since), (op, name, since, onnxruntime.__version__)


def test_the_lowering_writes_only_attributes_the_release_knows():
    assert "weights_prepacked" not in qmoe_attributes(8, 32, SCHEMA["1.27.0"])
    assert qmoe_attributes(8, 32, SCHEMA["1.30.0"]) == {"expert_weight_bits": 8, "weights_prepacked": 0,
                                                        "block_size": 32}
    assert activations_block(8, 32, SCHEMA["1.30.0"]) is None  # no accuracy_level: float activations
    assert activations_block(8, 32, SCHEMA["1.31.1"]) == 32 and activations_block(8, 0, SCHEMA["1.31.1"]) is None


def qmoe_model(path, **attributes) -> None:
    node = helper.make_node("QMoE", ["x", "r", "w1", "s1", "", "w2", "s2"], ["y"], domain="com.microsoft",
                            k=2, **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT16, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT16, [1, 64])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("com.microsoft", 1)]), path)


def test_engines_are_gated_per_release_and_device_in_one_line(tmp_path):
    path = tmp_path / "model.onnx"
    qmoe_model(path, **qmoe_attributes(8, 32))
    for version in ("1.31.1", "1.32.0"):
        check_engine_ops(path, version, cuda=True, schema=SCHEMA["1.31.1"])
    with pytest.raises(MixtralTrtError) as e:
        check_engine_ops(path, "1.30.0", cuda=False, schema=SCHEMA["1.30.0"])
    assert str(e.value) == (f"{path}: onnxruntime 1.30.0 cannot run this engine: QMoE attribute 'accuracy_level' "
                            "(onnxruntime 1.30.0 does not know it; first in 1.31)")
    qmoe_model(path, **qmoe_attributes(8, 32, SCHEMA["1.30.0"]))  # as a build under 1.30 writes it
    check_engine_ops(path, "1.30.0", cuda=False, schema=SCHEMA["1.30.0"])
    with pytest.raises(MixtralTrtError, match=r"model.onnx: onnxruntime 1.30.0 cannot run this engine: QMoE on the "
                                              r"CUDA EP needs onnxruntime-gpu 1.31 or newer") as e:
        check_engine_ops(path, "1.30.0", cuda=True, schema=SCHEMA["1.30.0"])
    assert "\n" not in str(e.value)


def test_an_unreadable_model_is_left_to_onnxruntime_to_report(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    check_engine_ops(tmp_path / "model.onnx", "1.30.0", cuda=True, schema=SCHEMA["1.30.0"])


def test_the_runtime_floor_is_the_newest_gpu_wheel_line():
    check_ort_version("1.31.1")
    check_ort_version("1.32.0")
    with pytest.raises(MixtralTrtError, match="onnxruntime 1.30.0 is older than 1.31"):
        check_ort_version("1.30.0")
