"""The plugins-cpu worker: `python -m mixtral_trt.runtime.backends.plugins_cpu_worker MODEL IN_FD OUT_FD`, started
by plugins_cpu.PluginsCpuRunner with TRITON_INTERPRET=1, so that triton is first imported here, to interpret.
Opens the ONNX Runtime session with the plugin ops, answers "ready" (or the error), then answers each
(feeds, output names) message with the outputs until its input closes."""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection
from pathlib import Path

from mixtral_trt.common.errors import MixtralTrtError

from ..distributed.wire import decode, encode


def _error(e: BaseException) -> dict:
    user = isinstance(e, MixtralTrtError)
    return {"error": str(e) if user else f"{type(e).__name__}: {e}", "user_error": user}


def serve(model: Path, inp: Connection, out: Connection) -> int:
    import numpy as np

    try:
        from mixtral_trt.plugins.cpu_ops import register_cpu_ops

        from .ort import OrtRunner

        library = register_cpu_ops()
        runner = OrtRunner(model, device="cpu", session_options_hook=lambda so: so.register_custom_ops_library(library))
    except Exception as e:  # the parent raises it
        out.send_bytes(encode(_error(e)))
        return 1
    out.send_bytes(encode({"ready": True}))
    while True:
        try:
            header, feeds = decode(inp.recv_bytes())
        except EOFError:  # the runner closed: done
            return 0
        try:
            outputs = runner.run(feeds, header["outputs"])  # present.* come back as OrtValues
            arrays = {k: v if isinstance(v, np.ndarray) else v.numpy() for k, v in outputs.items()}
        except Exception as e:
            out.send_bytes(encode(_error(e)))
            continue
        out.send_bytes(encode({"ok": True}, arrays))


def main(argv: list[str]) -> int:
    model, in_fd, out_fd = Path(argv[0]), int(argv[1]), int(argv[2])
    return serve(model, Connection(in_fd, writable=False), Connection(out_fd, readable=False))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
