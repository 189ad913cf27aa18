"""`genai_config.json`: what onnxruntime-genai needs to open an ONNX Runtime engine directory as it is.

genai has no Mixtral model type, but its `mistral` decoder is the generic one our graph fits: input and
output names by pattern, the KV cache as past_key_values.{i}.* -> present.{i}.*. The past is shared with
the present (one preallocated buffer written in place, genai's default) only for GroupQueryAttention
engines (backend ort-gqa); the canonical graph concatenates the cache, so its engines say false.
Search defaults come from the checkpoint's generation_config.json (HF's defaults where it is silent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixtral_trt.common.contract import GraphContract
from mixtral_trt.common.errors import MixtralTrtError

GENAI_CONFIG = "genai_config.json"
MODEL_TYPE = "mistral"  # genai 0.18 rejects "mixtral"
PROVIDERS = ("cpu", "cuda")
_SEARCH_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}


def genai_config(contract: GraphContract, model_file: str, generation: dict[str, Any] | None = None,
                 provider: str = "cpu", custom_ops_library: str | None = None) -> dict[str, Any]:
    """The genai_config.json document of an ONNX Runtime engine whose graph follows `contract`;
    `custom_ops_library`: the engine's copy of our CPU kernels' library (exporter/cpu_kernels_build.py)."""
    if provider not in PROVIDERS:
        raise MixtralTrtError(f"--genai-provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    cfg, generation = contract.config, generation or {}
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask"}
    if contract.names("position_ids", "inputs"):
        inputs["position_ids"] = "position_ids"
    inputs |= {"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
    eos = generation.get("eos_token_id", cfg.eos_token_id)
    search = {key: generation.get(key, default) if generation.get(key) is not None else default
              for key, default in _SEARCH_DEFAULTS.items()}
    return {
        "model": {
            "type": MODEL_TYPE,
            "bos_token_id": generation.get("bos_token_id", cfg.bos_token_id),
            "eos_token_id": eos,
            "pad_token_id": generation.get("pad_token_id") or (eos[0] if isinstance(eos, list) else eos),
            "vocab_size": cfg.vocab_size,
            "context_length": contract.max_seq,
            "decoder": {
                "filename": model_file,
                "session_options": {"log_id": "onnxruntime-genai",
                                    "provider_options": [{"cuda": {}}] if provider == "cuda" else [],
                                    **({"custom_ops_library": custom_ops_library} if custom_ops_library else {})},
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "num_attention_heads": cfg.num_heads,
                "num_key_value_heads": cfg.num_kv_heads,
                "num_hidden_layers": cfg.num_layers,
                "inputs": inputs,
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {
            **search,
            "max_length": contract.max_seq,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "diversity_penalty": 0.0,
            "length_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "early_stopping": True,
            "past_present_share_buffer": contract.attention == "gqa",
        },
    }


def write_genai_config(engine_dir: Path, contract: GraphContract, model_file: str, generation: dict[str, Any],
                       provider: str = "cpu", custom_ops_library: str | None = None) -> Path:
    path = Path(engine_dir) / GENAI_CONFIG
    document = genai_config(contract, model_file, generation, provider, custom_ops_library)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
