"""Per test module: a directory, the tiny checkpoint (real v1 tokenizer) and its fp32 ort engine."""

from __future__ import annotations

import pytest

from support.engines import engine, tiny_checkpoint


@pytest.fixture(scope="module")
def root(tmp_path_factory, request):
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def checkpoint(root):
    return tiny_checkpoint(root)


@pytest.fixture(scope="module")
def ort_engine(checkpoint, root):
    return engine(checkpoint, root)
