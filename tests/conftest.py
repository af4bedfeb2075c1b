"""Shared fixtures (helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForCausalLM + BPE tokenizer with a ChatML template, built once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The data stage's cache (and its remembered file hashes) in a folder of this test session."""
    import os

    os.environ["FTC_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))


@pytest.fixture(autouse=True, scope="session")
def _cpu_flags() -> None:
    """Plans must not depend on the machine the suite runs on: the CPU is pinned to one without native
    bf16 (compiler/host.py) and without flash-attn / liger-kernel, inherited by the `ftc` subprocesses too;
    tests of the bf16 and kernel choices set them."""
    import os

    from ftc.compiler.host import CPU_FLAGS_ENV, PACKAGES_ENV

    os.environ[CPU_FLAGS_ENV] = ""
    os.environ[PACKAGES_ENV] = ""  # nor on the CUDA speed packages installed here (tests of the choice set them)
