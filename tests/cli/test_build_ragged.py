"""`build --ragged` from the command line: refused in one line for a backend without the canonical attention,
nothing written."""

from __future__ import annotations

from support.cli_checks import one_line_error


def test_ragged_with_another_backend_is_one_line(tmp_path, cli, tiny_engine_dir, tiny_ckpt):
    onnx_dir = tiny_engine_dir.parent / f"onnx-{tiny_ckpt.name}-fp32"
    result = cli("build", onnx_dir, tmp_path / "engine", "--backend", "ort-gqa", "--ragged")
    one_line_error(result, 2, "--ragged applies to --backend ort", "not --backend ort-gqa")
    assert not (tmp_path / "engine").exists()
