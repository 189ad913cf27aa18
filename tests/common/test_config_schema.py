"""The one schema of config.json / params.json (common/config_schema.py; issue 10, item 4): every wrong type,
non-finite number or out-of-range value is one line naming the file and the field, before anything uses it.
"""

from __future__ import annotations

import json
import math

import pytest

from mixtral_trt.common.config import MixtralConfig
from mixtral_trt.common.errors import ConfigError
from mixtral_trt.mixtral_ref import get_preset

NAN, INF = float("nan"), float("inf")

HF_CASES = [
    ("rope_theta", NAN), ("rope_theta", INF), ("rope_theta", -INF), ("rope_theta", None), ("rope_theta", "abc"),
    ("rope_theta", 0), ("rms_norm_eps", NAN), ("rms_norm_eps", INF), ("rms_norm_eps", 0), ("rms_norm_eps", 2.0),
    ("max_position_embeddings", 10**12), ("max_position_embeddings", 0), ("max_position_embeddings", 4096.0),
    ("bos_token_id", "1"), ("bos_token_id", -1), ("eos_token_id", []), ("eos_token_id", ["2"]),
    ("eos_token_id", 2.0), ("sliding_window", "4096"), ("sliding_window", 0), ("rope_scaling", "linear"),
    ("rope_parameters", ["default"]), ("hidden_size", 64.0), ("hidden_size", "64"), ("num_local_experts", True),
    ("num_key_value_heads", "2"), ("head_dim", 16.5), ("tie_word_embeddings", "no"), ("tie_word_embeddings", 1),
    ("vocab_size", 2**40), ("model_type", 5), ("hidden_act", None),
]


def _write(tmp_path, name: str, d: dict):
    # json.dumps writes NaN / Infinity literals, which Python's json (and many exporters) produce and accept
    (tmp_path / name).write_text(json.dumps(d))
    return tmp_path / name


def _refused_naming(tmp_path, name: str, config: dict, key: str) -> None:
    """`config` written as `name` is refused at load in one line naming the file and the field."""
    path = _write(tmp_path, name, config)
    with pytest.raises(ConfigError) as info:
        MixtralConfig.from_dir(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}") and "\n" not in message, message


@pytest.mark.parametrize(("key", "value"), HF_CASES)
def test_bad_config_json_values_are_one_line_naming_file_and_field(tmp_path, key, value):
    _refused_naming(tmp_path, "config.json", {**get_preset("tiny").to_hf_dict(), key: value}, key)


PARAMS_CASES = [
    ("rope_theta", NAN), ("rope_theta", "abc"), ("norm_eps", INF), ("max_seq_len", 10**12), ("dim", 64.0),
    ("sliding_window", "4096"), ("tied_embeddings", "yes"), ("n_kv_heads", True), ("moe", "8x2"),
]


@pytest.mark.parametrize(("key", "value"), PARAMS_CASES)
def test_bad_params_json_values_are_one_line_naming_file_and_field(tmp_path, key, value):
    _refused_naming(tmp_path, "params.json", {**get_preset("tiny").to_params_dict(), key: value}, key)


def test_nested_fields_are_named_with_their_path(tmp_path):
    d = get_preset("tiny").to_params_dict()
    _write(tmp_path, "params.json", {**d, "moe": {"num_experts": 8, "num_experts_per_tok": "2"}})
    with pytest.raises(ConfigError, match=r"params.json: moe.num_experts_per_tok: expected a positive integer"):
        MixtralConfig.from_dir(tmp_path)
    hf = {**get_preset("tiny").to_hf_dict(), "rope_parameters": {"rope_type": "default", "rope_theta": NAN}}
    _write(tmp_path, "config.json", hf)
    with pytest.raises(ConfigError, match=r"config.json: rope_parameters.rope_theta: expected a finite number"):
        MixtralConfig.from_dir(tmp_path)


def test_valid_configs_still_read_with_their_defaults(tmp_path):
    cfg = get_preset("tiny")
    d = {**cfg.to_hf_dict(), "eos_token_id": [2, 3], "bos_token_id": None, "num_key_value_heads": None,
         "head_dim": None, "rope_scaling": None, "sliding_window": None, "rope_theta": 10000}
    _write(tmp_path, "config.json", d)
    got = MixtralConfig.from_dir(tmp_path)
    assert (got.eos_token_id, got.bos_token_id, got.num_kv_heads, got.head_dim) == (2, 1, cfg.num_heads, 16)
    assert got.rope_theta == 10000.0 and isinstance(got.rope_theta, float)
    params = {**cfg.to_params_dict(), "rope_theta": None}  # mistral-inference: null means 1e6
    (tmp_path / "config.json").unlink()
    _write(tmp_path, "params.json", params)
    assert MixtralConfig.from_dir(tmp_path).rope_theta == 1e6
    assert MixtralConfig.from_dir(tmp_path) == cfg.replace(rope_theta=1e6)


def test_configs_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="rope_theta: expected a finite number > 0, got NaN"):
        get_preset("tiny").replace(rope_theta=math.nan)
    with pytest.raises(ConfigError, match="tie_word_embeddings: expected true or false"):
        get_preset("tiny").replace(tie_word_embeddings="no")


def test_cli_reports_a_bad_config_in_one_line(tmp_path, cli, _good_checkpoint_cache):
    import shutil

    ckpt = shutil.copytree(_good_checkpoint_cache, tmp_path / "ckpt")
    d = json.loads((ckpt / "config.json").read_text())
    for key, value in [("rope_theta", NAN), ("rope_scaling", "linear"), ("eos_token_id", [])]:
        (ckpt / "config.json").write_text(json.dumps({**d, key: value}))
        result = cli("inspect", ckpt)
        assert result.code == 2 and result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
        assert result.err.startswith(f"error: {ckpt / 'config.json'}: {key}"), result.err
