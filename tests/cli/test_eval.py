"""`mixtral-export eval`: the figures equal the library's, JSON / PNG written, a saved reference reused, and
every bad input one line (exit 2) with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixtral_trt.parity import eval_text
from support.cli_checks import one_line_error

TEXT = Path(__file__).parents[2] / "docs" / "eval_text.txt"
ARGS = ["--ctx", "32", "--max-tokens", "100"]  # 3 windows, 48 scored tokens


def test_eval_writes_the_librarys_figures(tiny_engine_dir, tiny_ckpt, tmp_path, cli):
    result = cli("eval", tiny_engine_dir, "--text", TEXT, "--reference", tiny_ckpt, *ARGS, "--json",
                 tmp_path / "e.json", "--plot", tmp_path / "e.png", "--save-reference", tmp_path / "ref.bin")
    assert result.code == 0, result.out + result.err
    report = json.loads((tmp_path / "e.json").read_text())
    lib = eval_text(tiny_engine_dir, TEXT, tiny_ckpt, ctx=32, max_tokens=100)
    assert report["perplexity"] == lib.summary["perplexity"] and report["kl"] == lib.kl
    assert report["tokens"] == 48 and report["windows"] == 3 and report["top1_agreement"] == 1.0
    assert [layer["router_flip_rate"] for layer in report["layers"]] == [0.0, 0.0]
    assert sum(report["layers"][0]["expert_load"]) == 2 * 48
    assert "perplexity" in result.out and "top-1 agreement" in result.out
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli("eval", tiny_engine_dir, "--text", TEXT, "--reference-logits", tmp_path / "ref.bin", *ARGS,
                "--json", tmp_path / "again.json")
    assert again.code == 0, again.err
    reused = json.loads((tmp_path / "again.json").read_text())
    assert reused["kl"] == report["kl"] and reused["reference_logits"] == str(tmp_path / "ref.bin")


@pytest.mark.parametrize(("make", "args", "words"), [
    (lambda d: d / "missing.txt", [], ["--text", "missing.txt", "No such file"]),
    (lambda d: d, [], ["is a directory"]),
    (lambda d: _write(d / "latin1.txt", "café crème ".encode("latin-1") * 50), [], ["latin1.txt",
                                                                                    "not valid UTF-8"]),
    (lambda d: _write(d / "short.txt", b"Two experts per token."), [], ["short.txt", "shorter than one window"]),
    (lambda d: TEXT, ["--max-tokens", "20"], ["--max-tokens", "shorter than one window"]),
    (lambda d: TEXT, ["--ctx", "4096"], ["ctx=4096", "<= 256"]),
    (lambda d: TEXT, ["--stride", "64"], ["stride=64", "at most ctx"]),
    (lambda d: TEXT, ["--max-tokens", "0"], ["max_tokens=0"]),
    (lambda d: TEXT, ["--save-reference", "{d}/r.bin"], ["--save-reference", "needs --reference"]),
    (lambda d: TEXT, ["--reference", "{d}", "--reference-logits", "{d}/r.bin"], ["give one"]),
    (lambda d: TEXT, ["--reference", "{d}/nowhere"], ["nowhere", "not a checkpoint or engine directory"]),
    (lambda d: TEXT, ["--reference-logits", str(TEXT)], ["not a reference-logits file"]),
    (lambda d: _write(d / "t.txt", TEXT.read_bytes()), ["--reference", "{d}/nowhere", "--save-reference",
                                                        "{d}/t.txt"], ["t.txt", "is the input"]),
])
def test_bad_inputs_are_one_line_errors(tiny_engine_dir, tmp_path, cli, make, args, words):
    text = make(tmp_path)
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    base = ["--ctx", "32"] if "--ctx" not in args else []
    result = cli("eval", tiny_engine_dir, "--text", text, *base, *args, "--json", tmp_path / "out.json")
    one_line_error(result, 2, *words)
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "r.bin").exists()


def test_a_reference_saved_for_other_windows_is_refused(tiny_engine_dir, tiny_ckpt, tmp_path, cli):
    saved = cli("eval", tiny_engine_dir, "--text", TEXT, "--reference", tiny_ckpt, *ARGS,
                "--save-reference", tmp_path / "ref.bin")
    assert saved.code == 0, saved.err
    result = cli("eval", tiny_engine_dir, "--text", TEXT, "--reference-logits", tmp_path / "ref.bin", "--ctx", "32",
                 "--stride", "16", "--max-tokens", "100")
    one_line_error(result, 2, "ref.bin", "made for --stride 32, but this run has 16")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
