"""Checkpoints and engines for runtime tests, built once per session by the fixtures that use them."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from mixtral_trt.exporter.build import build_engine
from mixtral_trt.exporter.export import export_checkpoint
from mixtral_trt.mixtral_ref.writer import init_checkpoint


def tiny_checkpoint(root: Path, seed: int = 0, perturb_expert: tuple[int, int] | None = None,
                    tokenizer: str = "v1", scale: float | None = None) -> Path:
    """The `tiny` preset (real v1 tokenizer beside it; `tokenizer="v3"`: the 8x22B vocabulary of 32768 tokens
    and its tokenizer, with the tool tokens); `perturb_expert=(layer, expert)` adds noise to that expert's
    down projection, making a checkpoint whose engine must FAIL parity against the original; with `scale` that
    projection is multiplied by it instead (a small systematic change that `eval` must see)."""
    from mixtral_trt.mixtral_ref import get_preset, load_model
    from mixtral_trt.mixtral_ref.writer import save_checkpoint

    cfg = get_preset("tiny").replace(vocab_size={"v1": 32000, "v3": 32768}[tokenizer])
    name = f"ckpt-{seed}" if tokenizer == "v1" else f"ckpt-{tokenizer}-{seed}"
    path = init_checkpoint(cfg, root / name, seed=seed)
    if perturb_expert is None:
        return path
    layer, expert = perturb_expert
    model = load_model(path)
    with torch.no_grad():
        w2 = model.layers[layer].moe.w2
        if scale is None:
            w2[expert] += 0.5 * w2[expert].std() * torch.randn_like(w2[expert])
        else:
            w2[expert] *= scale
    name = f"ckpt-{seed}-perturbed" + (f"-x{scale:g}" if scale is not None else "")
    out = save_checkpoint(model, model.config, root / name, layout="hub")
    for tokenizer_file in path.glob("tokenizer.model*"):  # the same tokenizer: eval reads text through it
        shutil.copy(tokenizer_file, out / tokenizer_file.name)
    return out


def engine(checkpoint: Path, root: Path, backend: str = "ort", dtype: str = "fp32", max_seq: int = 256,
           max_batch: int = 4, kv_cache: str = "float", ragged: bool = False) -> Path:
    """Export + build once per (checkpoint, dtype, backend, max_batch, kv_cache, ragged) under `root`; later calls
    reuse the directory."""
    batch = "" if max_batch == 4 else f"-b{max_batch}"
    onnx_dir = root / f"onnx-{checkpoint.name}-{dtype}{batch}"
    if not onnx_dir.exists():
        export_checkpoint(checkpoint, onnx_dir, dtype=dtype, max_seq=max_seq, max_batch=max_batch, debug_outputs=True)
    kv = ("" if kv_cache == "float" else f"-kv{kv_cache}") + ("-ragged" if ragged else "")
    out = root / f"engine-{checkpoint.name}-{dtype}-{backend}{batch}{kv}"
    return out if out.exists() else build_engine(onnx_dir, out, backend, kv_cache=kv_cache, ragged=ragged)
