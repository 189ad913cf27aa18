"""The files that travel with the graph from checkpoint to export to engine directory: the SentencePiece
tokenizer, its HF conversion (tokenizer.json, tokenizer_config.json with the chat template) and the
checkpoint's generation_config.json (the search defaults that genai_config.json carries)."""

from __future__ import annotations

import shutil
from pathlib import Path

from mixtral_trt.chat.hf_tokenizer import HF_FILES, write_hf_tokenizer
from mixtral_trt.chat.tokenizer import Tokenizer, copy_tokenizer
from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.common.fileio import read_json_object
from mixtral_trt.common.paths import confined

GENERATION_CONFIG = "generation_config.json"


def write_export_side_files(checkpoint: str | Path, out_dir: Path, model_max_length: int) -> list[Path]:
    """Copy the checkpoint's tokenizer and generation_config.json into `out_dir` and convert the tokenizer
    to HF files there. A checkpoint without a tokenizer gives an export without one (ids only)."""
    written = []
    copied = copy_tokenizer(checkpoint, out_dir)
    if copied is not None:
        written += [copied, *write_hf_tokenizer(Tokenizer(copied), out_dir, model_max_length)]
    generation = Path(checkpoint) / GENERATION_CONFIG
    if generation.is_file():  # a JSON object inside the checkpoint (no link leading elsewhere)
        read_json_object(confined(checkpoint, generation), MixtralTrtError)
        written.append(Path(shutil.copyfile(generation, out_dir / GENERATION_CONFIG)))
    return written


def copy_side_files(source_dir: str | Path, target_dir: Path) -> list[Path]:
    """Carry the side files of an export directory into an engine directory (those that exist)."""
    copied = copy_tokenizer(source_dir, target_dir)
    written = [] if copied is None else [copied]
    for name in (*HF_FILES, GENERATION_CONFIG):
        if (Path(source_dir) / name).is_file():
            source = confined(source_dir, Path(source_dir) / name)  # no link leading out of the export
            written.append(Path(shutil.copyfile(source, target_dir / name)))
    return written


def read_generation_config(directory: str | Path) -> dict:
    """generation_config.json of an export directory, {} when absent."""
    path = Path(directory) / GENERATION_CONFIG
    return read_json_object(path, MixtralTrtError) if path.is_file() else {}
