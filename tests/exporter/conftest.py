"""Fixtures for exporter tests: tiny random models exported once per session."""

from __future__ import annotations

import pytest

from support.models import SLIDING_TOP3, export_dir, random_model


@pytest.fixture(scope="session")
def sliding_top3(tmp_path_factory):
    """(reference fp32 model, export dir) for the 6-expert top-3 sliding-window config."""
    model = random_model(SLIDING_TOP3, seed=1)
    return model, export_dir(tmp_path_factory, model, "fp32", "sliding_top3")
