"""`export`, `build` and `init` never destroy what the user owns (issue 10, items 1, 7 and 10): OUT that is,
contains or lies inside an input, OUT = `.`, a home or root directory, and `--force` over a directory this
tool did not write are refused in one line (exit 2) with every file left as it was, before any tracing.
"""

from __future__ import annotations

import json
import shutil

import pytest

from support.cli_checks import one_line_error, snapshot


@pytest.fixture
def no_trace(monkeypatch):
    """These refusals must come first: tracing (seconds to minutes) is a failure here."""
    from mixtral_trt.exporter import export

    monkeypatch.setattr(export, "trace_graph", lambda *a, **k: pytest.fail("traced before refusing OUT"))


@pytest.fixture
def work(tmp_path, tiny_ckpt, monkeypatch):
    """tmp/work/ckpt (a copy of the tiny checkpoint) and tmp/work/unrelated.txt; cwd = tmp/work."""
    work = tmp_path / "work"
    shutil.copytree(tiny_ckpt, work / "ckpt")
    (work / "unrelated.txt").write_text("precious")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def onnx_dir(work, tiny_engine_dir, tiny_ckpt):
    """A copy of the session's tiny export (support.engines names it onnx-<checkpoint>-fp32)."""
    return shutil.copytree(tiny_engine_dir.parent / f"onnx-{tiny_ckpt.name}-fp32", work / "onnx")


@pytest.mark.parametrize(("args", "words"), [
    (["export", "ckpt", "ckpt", "--force"], ["is the input ckpt"]),
    (["export", "ckpt", ".", "--force"], ["current directory"]),
    (["export", "ckpt", "."], ["current directory"]),
    (["export", "ckpt", "..", "--force"], ["current directory"]),
    (["export", "ckpt", "ckpt/onnx"], ["lies inside the input ckpt"]),
    (["export", "ckpt", "unrelated.txt", "--force"], ["exists and is not a directory"]),
    (["init", ".", "--force"], ["current directory"]),
])
def test_outputs_over_inputs_or_the_current_directory_are_refused(work, no_trace, cli, args, words):
    before = snapshot(work)
    one_line_error(cli(*args), 2, *words)
    assert snapshot(work) == before


def test_output_containing_the_input_is_refused(work, no_trace, cli, monkeypatch):
    monkeypatch.chdir(work.parent)
    before = snapshot(work)
    one_line_error(cli("export", "work/ckpt", "work", "--force"), 2, "contains the input work/ckpt")
    assert snapshot(work) == before and (work / "unrelated.txt").read_text() == "precious"


def test_home_and_root_are_refused(work, no_trace, cli, monkeypatch):
    home = work / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    one_line_error(cli("export", "ckpt", home, "--force"), 2, "root or home directory")
    one_line_error(cli("export", "ckpt", "/", "--force"), 2, "directory")  # root: also a parent of the current one


def test_force_over_a_directory_this_tool_did_not_write_is_refused(work, no_trace, cli):
    mine = work / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    (mine / "graph.json").write_text(json.dumps({"format": "something-else/1"}))
    one_line_error(cli("export", "ckpt", mine, "--force"), 2, "not a directory mixtral-export wrote")
    one_line_error(cli("init", mine, "--force"), 2, "not a directory mixtral-export wrote")
    assert sorted(p.name for p in mine.iterdir()) == ["graph.json", "notes.txt"]


def test_existing_output_is_reported_before_the_trace(work, no_trace, cli):
    (work / "onnx").mkdir()
    (work / "onnx" / "graph.json").write_text(json.dumps({"format": "mixtral-trt.graph-contract/1"}))
    one_line_error(cli("export", "ckpt", "onnx"), 2, "exists and is not empty", "--force")


def test_build_into_its_input_is_refused(work, onnx_dir, cli):
    before = snapshot(onnx_dir)
    one_line_error(cli("build", onnx_dir, onnx_dir, "--force"), 2, "is the input")
    one_line_error(cli("build", onnx_dir, onnx_dir / "engine"), 2, "lies inside the input")
    one_line_error(cli("build", onnx_dir, work, "--force"), 2, "current directory")
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("mine")
    one_line_error(cli("build", onnx_dir, work / "mine", "--force"), 2, "not a directory mixtral-export wrote")
    assert snapshot(onnx_dir) == before and (work / "mine" / "notes.txt").read_text() == "mine"


def test_force_replaces_this_tools_own_output(work, onnx_dir, cli):
    assert cli("build", onnx_dir, work / "engine").code == 0
    assert cli("build", onnx_dir, work / "engine", "--force", "--backend", "portable").code == 0
    manifest = json.loads((work / "engine" / "manifest.json").read_text())
    assert manifest["backend"] == "portable"
    assert sorted(p.name for p in work.iterdir()) == ["ckpt", "engine", "onnx", "unrelated.txt"]
