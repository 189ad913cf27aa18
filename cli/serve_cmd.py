"""`mixtral-export serve ENGINE`: an OpenAI- and Mistral-compatible HTTP server over the engine, with
concurrent requests batched in the engine (mixtral_trt.serve)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixtral_trt.common.errors import MixtralTrtError

from .app import app
from .sampling_opts import Device


@app.command("serve")
def serve(
    engine_dir: Annotated[Path, typer.Argument(help="Engine directory (mixtral-export build).")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="MIXTRAL_TRT_API_KEY",
                                                help="Require 'Authorization: Bearer KEY' on /v1 routes.")] = None,
    max_batch: Annotated[int | None, typer.Option(help="Most requests decoded together (default: the "
                                                  "engine's max batch).")] = None,
    max_queue: Annotated[int, typer.Option(help="Most requests waiting for a batch row; beyond: 429.")] = 64,
    model_name: Annotated[str | None, typer.Option(help="Model id in responses and /v1/models (default: the "
                                                   "engine directory's name).")] = None,
    grace: Annotated[float, typer.Option(help="Seconds in-flight requests get to finish on shutdown.")] = 30.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB; beyond: 413.")] = 8.0,
    header_timeout: Annotated[float, typer.Option(help="Seconds a client gets to send a request's headers.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds a client gets to send a request's body; "
                                                "beyond: 408.")] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    device: Device = "auto",
    expert_load: Annotated[bool, typer.Option(help="Count tokens routed to each expert of each layer in /metrics "
                                              "(engines exported with --debug-outputs).")] = False,
    prefix_cache_gb: Annotated[float | None, typer.Option(
        help="Memory for the prefix cache in GiB (KV blocks of earlier prompts reused by later ones); 0: off. "
             "Default: the engine's own, else 1 GiB (at most a quarter of the free memory).")] = None,
    prefill_chunk: Annotated[str, typer.Option(
        help="Prompt tokens computed per step while other rows decode (chunked prefill): a number, 'auto' (sized "
             "from measured step times so a step with a chunk costs under 2 decode steps where a chunk can) or "
             "'none' (whole prompts). Default: 256, or 4 on a --ragged engine (its chunk rides in the decode rows' "
             "own call: mixed steps; 4 keeps their p99 gap under 2x their step, measured).")] = "default",
) -> None:
    """Serve POST /v1/chat/completions, /v1/completions, GET /v1/models, /health and /metrics.

    Ctrl-C and SIGTERM shut down gracefully, then exit 130 (uvicorn handles the signal, then raises it again
    for main()'s handler)."""
    from mixtral_trt.serve.limits import Limits
    from mixtral_trt.serve.server import serve as run

    if not max_body_mb > 0:
        raise MixtralTrtError(f"--max-body-mb={max_body_mb}: must be > 0")
    limits = Limits(max_body_bytes=int(max_body_mb * 2**20), header_timeout=header_timeout, body_timeout=body_timeout)
    chunk = _prefill_chunk(prefill_chunk)
    try:
        run(engine_dir, host, port, grace=grace, log_level=log_level, api_key=api_key, max_batch=max_batch,
            max_queue=max_queue, device=device, model_name=model_name, limits=limits, expert_load=expert_load,
            prefix_cache_gb=prefix_cache_gb, prefill_chunk=chunk)
    except MixtralTrtError as e:  # the Scheduler names its arguments; the user gave options
        message = str(e)
        for name in ("prefix_cache_gb", "prefill_chunk"):
            if message.startswith(name):
                raise MixtralTrtError("--" + name.replace("_", "-") + message[len(name):]) from None
        raise


def _prefill_chunk(value: str) -> int | str | None:
    """--prefill-chunk: 'auto', 'none', 'default' or a number of tokens >= 1."""
    if value in ("auto", "none", "default"):
        return None if value == "none" else value
    try:
        tokens = int(value)
    except ValueError:
        tokens = 0
    if tokens < 1:
        raise MixtralTrtError(f"--prefill-chunk={value}: expected a number of tokens >= 1, 'auto' or 'none'")
    return tokens
