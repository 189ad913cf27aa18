"""The plugins-cpu runner is a worker process started with TRITON_INTERPRET=1, so a plugins-cpu engine opens in any
process: here one that imported torch and transformers and ran HF's model first (which imports triton to
compile), where an in-process interpreter could no longer be switched on. Oracle: HF transformers' logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mixtral_trt import runtime
from mixtral_trt.common.errors import MixtralTrtError
from support.engines import engine, tiny_checkpoint

AFTER_HF = """
import json, os, sys
import numpy as np, torch
from transformers import MixtralForCausalLM
ckpt, engine_dir = sys.argv[1:3]
ids = np.random.default_rng(0).integers(3, 32000, (2, 11))
with torch.no_grad():
    ref = MixtralForCausalLM.from_pretrained(ckpt).eval()(torch.from_numpy(ids)).logits.numpy()
state = {"triton_imported": "triton" in sys.modules, "interpret": os.environ.get("TRITON_INTERPRET")}
from mixtral_trt import runtime
got = runtime.load(engine_dir).logits(ids)
print(json.dumps({**state, "rel": float(np.abs(got - ref).max() / np.abs(ref).max())}))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(tiny checkpoint, its plugins-cpu engine)."""
    root = tmp_path_factory.mktemp("pcpu")
    ckpt = tiny_checkpoint(root)
    return ckpt, engine(ckpt, root, "plugins-cpu", max_seq=64)


def test_plugins_cpu_engine_after_torch_and_transformers_ran(tiny):
    ckpt, engine_dir = tiny
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", AFTER_HF, str(ckpt), str(engine_dir)], capture_output=True,
                            text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"plugins-cpu after HF transformers ran in the same process: {report}")
    assert report["triton_imported"] and report["interpret"] is None  # the situation that used to fail
    assert report["rel"] < 1e-5, f"plugins-cpu vs HF transformers: logits relative error {report['rel']:.2e}"


def test_worker_errors_and_close(tmp_path):
    from mixtral_trt.runtime.backends.plugins_cpu import PluginsCpuRunner

    (tmp_path / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(MixtralTrtError, match="ONNX Runtime cannot open the engine"):
        PluginsCpuRunner(tmp_path / "model.onnx")


def test_closed_engine_is_an_error(tiny):
    eng = runtime.load(tiny[1])
    proc = eng.runner._proc
    eng.runner.close()
    assert proc.wait(timeout=10) == 0
    with pytest.raises(MixtralTrtError, match="closed"):
        eng.logits(np.array([[1, 2, 3]]))
