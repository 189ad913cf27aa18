"""Disk full and read-only file systems during `init`, `export` and `build` (issue 10, item 7): one line,
exit 1, the previous output intact and no temporary left; outputs follow the umask (item 9).
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.cli_checks import one_line_error, snapshot

CLI = str(Path(sys.executable).with_name("mixtral-export"))


def _disk_full_after(monkeypatch, module, name, nbytes=4096):
    """`module.name` (a save function) writes `nbytes` of its file, then fails as a full disk does."""
    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(module, name, full)


@pytest.fixture
def onnx_dir(tiny_engine_dir, tiny_ckpt):
    return tiny_engine_dir.parent / f"onnx-{tiny_ckpt.name}-fp32"


def test_file_size_limit_during_init_is_one_line_and_the_old_checkpoint_stays(tmp_path, cli):
    """A real kernel refusal (RLIMIT_FSIZE: EFBIG) in a real process, over an older checkpoint (--force)."""
    out = tmp_path / "ckpt"
    assert cli("init", out, "--seed", "1").code == 0
    before = snapshot(out)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run([CLI, "init", str(out), "--seed", "2", "--force"], capture_output=True, text=True,
                            preexec_fn=limit)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "File too large" in result.stderr and str(out) in result.stderr
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_disk_full_during_build(tmp_path, cli, onnx_dir, monkeypatch):
    import onnx_ir

    engine = tmp_path / "engine"
    assert cli("build", onnx_dir, engine).code == 0
    before = snapshot(engine)
    _disk_full_after(monkeypatch, onnx_ir, "save")
    one_line_error(cli("build", onnx_dir, engine, "--force"), 1, f"{engine / 'model.onnx'}: No space left on device",
              "unchanged")
    assert snapshot(engine) == before and sorted(p.name for p in tmp_path.iterdir()) == ["engine"]


def test_disk_full_during_export(tmp_path, cli, tiny_ckpt, monkeypatch):
    import onnx_ir

    out = tmp_path / "onnx"
    out.mkdir()
    (out / "graph.json").write_text('{"format": "mixtral-trt.graph-contract/1"}')  # an older export
    _disk_full_after(monkeypatch, onnx_ir, "save")
    one_line_error(cli("export", tiny_ckpt, out, "--force", "--max-seq", "64"), 1, "No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["graph.json"] and [p.name for p in tmp_path.iterdir()] == ["onnx"]


@pytest.mark.parametrize("command", ["init", "build"])
def test_read_only_file_system(tmp_path, cli, onnx_dir, monkeypatch, command):
    from mixtral_trt.common import fileio

    def read_only(path, mode=0o777):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(fileio.os, "mkdir", read_only)
    args = ["init", tmp_path / "out"] if command == "init" else ["build", onnx_dir, tmp_path / "out"]
    one_line_error(cli(*args), 1, "Read-only file system", "cannot write")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("umask", "dirs", "files"), [(0o022, "0o755", "0o644"), (0o077, "0o700", "0o600")])
def test_outputs_follow_the_umask(tmp_path, cli, onnx_dir, umask, dirs, files):
    old = os.umask(umask)
    try:
        assert cli("init", tmp_path / "ckpt").code == 0
        assert cli("build", onnx_dir, tmp_path / "engine").code == 0
    finally:
        os.umask(old)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in sorted(tmp_path.rglob("*"))}
    wrong = {p: m for p, m in modes.items() if m != (dirs if (tmp_path / p).is_dir() else files)}
    assert not wrong, f"umask {oct(umask)}: {wrong}"
    assert "ckpt/model.safetensors" in modes  # the file safetensors writes 0600 by itself
