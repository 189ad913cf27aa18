"""Each broken checkpoint (tests/support/broken_checkpoints.py: BROKEN) raises a one-line `MixtralTrtError`
naming the file or tensor (library level; tests/exporter/test_cli_inspect.py checks the same cases through the CLI)."""

from __future__ import annotations

import pytest

from mixtral_trt.mixtral_ref import MixtralTrtError, load_model
from mixtral_trt.mixtral_ref.checkpoint import inspect_checkpoint


def test_broken_checkpoint_raises_one_line(broken_checkpoint):
    case, path, expected = broken_checkpoint
    for load in (load_model, inspect_checkpoint):
        with pytest.raises(MixtralTrtError) as info:
            load(path)
        message = str(info.value)
        assert "\n" not in message, message
        for part in expected:
            assert part in message, f"{case}: {part!r} not in {message!r}"
