"""What constrained decoding costs per token, next to a decode step of the same engine.

Replies constrained to SCHEMA are sampled (temperature 1) token by token from the engine's own logits,
as `Sampler` does; each step times the engine call (one token through the KV cache) and, apart, the
grammar's work: the allowed-token mask, applying it to the logits, and advancing the matcher past the
drawn token. A reply that completes its grammar is followed by a fresh one (the prompt re-read, untimed)
until `new_tokens` masked steps are measured. Grammar compile time is per request.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from mixtral_trt.runtime.chat_completion import response_constraint
from mixtral_trt.runtime.sampling import SamplingParams, draw, processed_logits

# A tool-call-like schema: strings, an enum, bounded numbers, a nested object, an array, anyOf.
SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["city", "unit", "days", "filters"],
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "filters": {"type": "object", "additionalProperties": False, "required": ["tags", "near"],
                    "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                            "maxItems": 3},
                                   "near": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 12}]}}},
    },
}


def constrained_overhead(engine, prompt: list[int], new_tokens: int, seed: int = 0) -> dict[str, Any]:
    """Per-token figures (ms) of the grammar next to the engine's decode step, and their ratio."""
    tokenizer = engine.tokenizer
    response_format = {"type": "json_schema", "json_schema": {"name": "bench", "schema": SCHEMA}}
    start = time.perf_counter()
    factory = response_constraint(tokenizer, response_format)  # first call: llguidance's view of the vocabulary
    setup_ms = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    factory = response_constraint(tokenizer, response_format)
    compile_ms = (time.perf_counter() - start) * 1e3
    params = SamplingParams(temperature=1.0, seed=seed)
    new_tokens = max(new_tokens, 2)  # at least one timed decode step
    rng = np.random.default_rng(seed)
    decode_s, mask_s, replies, finished = [], [], 0, 0
    while len(mask_s) < new_tokens:
        constraint, seen = factory(), list(prompt)
        out, cache = engine.forward(np.asarray([prompt], np.int64))
        logits = out["logits"][0, -1]  # [V]
        replies += 1
        while len(mask_s) < new_tokens:
            t0 = time.perf_counter()
            masked = np.where(constraint.allowed(), logits, -np.inf)  # [V]
            t1 = time.perf_counter()
            x = processed_logits(masked, seen, params)
            token = draw(rng, x)
            t2 = time.perf_counter()
            constraint.advance(token)
            t3 = time.perf_counter()
            mask_s.append((t1 - t0) + (t3 - t2))
            seen.append(token)
            if constraint.terminated:
                finished += 1
                break
            t4 = time.perf_counter()
            out, cache = engine.forward(np.asarray([[token]], np.int64), cache)
            decode_s.append(time.perf_counter() - t4)
            logits = out["logits"][0, -1]
    mask_ms, decode_ms = np.asarray(mask_s) * 1e3, np.asarray(decode_s) * 1e3
    return {
        "schema": "bench/constrained.py SCHEMA", "vocab_size": tokenizer.vocab_size, "tokens": len(mask_ms),
        "replies": replies, "replies_completed": finished,
        "mask_ms_mean": float(mask_ms.mean()), "mask_ms_p50": float(np.median(mask_ms)),
        "mask_ms_p99": float(np.percentile(mask_ms, 99)),
        "decode_step_ms_mean": float(decode_ms.mean()), "decode_step_ms_p50": float(np.median(decode_ms)),
        "mask_over_decode": float(mask_ms.mean() / decode_ms.mean()),
        "compile_ms": compile_ms, "tokenizer_setup_ms": setup_ms,
    }
