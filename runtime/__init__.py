"""mixtral_trt.runtime: open an engine directory and run it.

    from mixtral_trt import runtime
    engine = runtime.load("engines/tiny-ort")
    logits = engine.logits(input_ids)                                  # [B, T] -> [B, T, V]
    engine.generate("The capital of France is", max_new_tokens=32).text
    engine.generate([ids_a, ids_b], temperature=0.7, top_p=0.9, seed=0)  # a batch, one Completion each
    engine.generate(ids, logprobs=5).logprobs                          # TokenLogprob per new token
    engine.enable_prefix_cache(gb=1.0)                                 # reuse the KV of shared prompt beginnings
    for piece in engine.chat_stream([{"role": "user", "content": "Hi"}], safe_mode=True):
        print(piece, end="")
    reply = engine.chat_completion(messages, tools=tools, tool_choice="any")   # .tool_calls, .finish_reason
    engine.chat_completion(messages, response_format={"type": "json_object"}).content  # JSON text
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .chat_completion import ChatChunk, ChatCompletion, Usage
from .logprobs import TokenLogprob
from .reply import Completion, StreamEvent
from .sampling import SamplingParams
from .tool_calls import ToolCall

if TYPE_CHECKING:
    from .engine import Engine


def load(path: str | Path, device: str = "auto", verify: bool = True, tokenizer: str | Path | None = None) -> Engine:
    """Open the engine directory `path` (written by `mixtral-export build`).

    `verify` checks every artifact's size and sha256 against manifest.json before anything is loaded.
    `device`: auto | cpu | cuda (ONNX Runtime engines; TensorRT engines always run on CUDA).
    `tokenizer`: a tokenizer file to use instead of the one in the engine directory.
    """
    from mixtral_trt.common.manifest import Manifest

    from .backends import open_runner
    from .distributed import open_runner as open_sharded
    from .engine import Engine

    path = Path(path)
    manifest = Manifest.load(path, verify=verify)
    # tensor-parallel engines: the rank processes of runtime/distributed, each running a backend's runner
    runner = (open_sharded if "tensor_parallel" in manifest.backend_info else open_runner)(manifest, path, device)
    return Engine(path, manifest, runner, Path(tokenizer) if tokenizer else None)


__all__ = ["ChatChunk", "ChatCompletion", "Completion", "SamplingParams", "StreamEvent", "TokenLogprob", "ToolCall",
           "Usage", "load"]
