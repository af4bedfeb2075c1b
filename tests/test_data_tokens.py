"""Token lengths at compile time: the torch-free tokenizer encodes exactly as transformers does, and the
planner uses the measured lengths (max_length = "auto", the estimate's sequence length)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings, write_jsonl

from ftc.compiler import SpecError, compile_spec
from ftc.compiler.tokens import LightTokenizer
from ftc.core.data.encode import encode_example
from ftc.core.data.mapping import to_example

ROWS = [
    ("chat", {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two"},
                           {"role": "assistant", "content": "three"}, {"role": "user", "content": "four"},
                           {"role": "assistant", "content": "five six seven"}]}),
    ("completion", {"prompt": "translate red, \"quoted\" (x)", "completion": "RED!"}),
    ("text", {"text": "the quick brown fox jumps over the lazy dog 0123"}),
]


@pytest.mark.parametrize(("fmt", "row"), ROWS, ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("train_on", ["answers", "last_answer", "inputs_too"])
def test_light_tokenizer_encodes_like_transformers(tiny_model: Path, tiny_tokenizer: Any, fmt: str,
                                                   row: dict[str, Any], train_on: str) -> None:
    settings = data_settings(fmt, 512, train_on="answers" if fmt == "text" else train_on)
    example = to_example(row, settings)
    light = encode_example(LightTokenizer(tiny_model), example, settings)
    assert light == encode_example(tiny_tokenizer, example, settings)


def test_light_tokenizer_matches_the_bundled_model(tmp_path: Path) -> None:
    """The real SmolLM2 tokenizer and chat template (its system-prompt default included), when converted here."""
    from ftc.core.bundled import MARKER, cache_root

    directory = cache_root() / "models" / "smollm2-135m-instruct"
    if not (directory / MARKER).is_file():
        pytest.skip("the bundled model is not converted on this machine (ftc data or ftc run converts it)")
    from transformers import AutoTokenizer

    settings = data_settings("chat", 512)
    example = to_example(ROWS[0][1], settings)
    assert encode_example(LightTokenizer(directory), example, settings) == encode_example(
        AutoTokenizer.from_pretrained(directory), example, settings)


def spec(max_length: str, model: str = "tiny", packing: str = "false") -> str:
    return (f'name = "t"\n[model]\nbase = "{model}"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
            f'max_length = {max_length}\npacking = {packing}\n[method]\nkind = "lora"\n[train]\nbatch_size = 2\n'
            '[hardware]\ndevice = "cpu"\n')


@pytest.fixture
def workdir(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "tiny")
    rows = [{"prompt": "one two three " * (i % 5 + 1) + str(i), "completion": "four"} for i in range(30)]
    write_jsonl(tmp_path / "d.jsonl", rows)
    return tmp_path


def test_max_length_auto_is_the_longest_measured_example(workdir: Path, tiny_tokenizer: Any) -> None:
    (workdir / "s.toml").write_text(spec('"auto"'))
    plan = compile_spec(workdir / "s.toml").plan
    settings = data_settings("completion", 10_000)
    longest = max(encode_example(tiny_tokenizer, to_example(json.loads(line), settings), settings)["length"]
                  for line in (workdir / "d.jsonl").read_text().splitlines())
    assert plan["max_length"] == -(-longest // 8) * 8 and plan["max_length"] >= longest
    assert f"has {longest} tokens" in plan.settings["max_length"].why
    assert any(r.startswith("tokens: 30 examples measured") for r in plan.reasons)


def test_estimate_uses_the_measured_length_unless_packing(workdir: Path) -> None:
    (workdir / "s.toml").write_text(spec("512"))
    short = compile_spec(workdir / "s.toml").plan
    assert any("the longest of 30 measured examples" in r for r in short.reasons)
    (workdir / "s.toml").write_text(spec("512", packing="true"))
    packed = compile_spec(workdir / "s.toml").plan
    assert any("512 tokens per row (packed rows are max_length long)" in r for r in packed.reasons)
    assert short.memory is not None and packed.memory is not None
    assert short.memory.total < packed.memory.total


def test_max_length_auto_needs_a_tokenizer(workdir: Path) -> None:
    (workdir / "bare").mkdir()
    shutil.copy(workdir / "tiny" / "config.json", workdir / "bare" / "config.json")
    (workdir / "s.toml").write_text(spec('"auto"', model="bare"))
    with pytest.raises(SpecError, match=r"data.max_length: \"auto\" measures the data with the model's tokenizer"):
        compile_spec(workdir / "s.toml")


def test_measuring_stays_torch_free(workdir: Path) -> None:
    import subprocess

    (workdir / "s.toml").write_text(spec('"auto"'))
    code = ("import sys; from ftc.compiler import compile_spec; r = compile_spec('s.toml'); "
            "assert r.facts.tokens is not None; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_compile_runs_the_data_stage_on_the_first_rows(workdir: Path) -> None:
    rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "one two three " * 30, "completion": "lost"}]
    write_jsonl(workdir / "d.jsonl", rows)
    (workdir / "s.toml").write_text(spec("32"))
    with pytest.raises(SpecError, match=r"data.source: d.jsonl: 1 example\(s\) with no trained token \(rows 2\)"):
        compile_spec(workdir / "s.toml")
    write_jsonl(workdir / "d.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    (workdir / "s.toml").write_text(spec("64").replace('"completion"', '"chat"'))
    with pytest.raises(SpecError, match=r"role 'robot' cannot be mapped"):
        compile_spec(workdir / "s.toml")


def test_chatml_is_refused_when_its_markers_are_not_tokens(workdir: Path) -> None:
    """A base model without a chat template nor ChatML tokens: ChatML would be trained as plain text and
    the model would never learn to stop; compile and the data stage both say so."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ftc.core.data.encode import DataError, ensure_chat_template

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["one two three four"] * 10, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    base = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    (workdir / "base").mkdir()
    base.save_pretrained(workdir / "base")
    shutil.copy(workdir / "tiny" / "config.json", workdir / "base" / "config.json")
    (workdir / "s.toml").write_text(spec("64", model="base"))
    with pytest.raises(SpecError, match=r"data.format: base's tokenizer has no chat template, and the ChatML "
                                        r"markers ftc would add \(<\|im_start\|>, <\|im_end\|>\) are not tokens"):
        compile_spec(workdir / "s.toml")
    with pytest.raises(DataError, match="set data.template to a plain-text prompt template"):
        ensure_chat_template(base)
    template = '"Q: {{ prompt }}\\nA: "'
    (workdir / "s.toml").write_text(spec("64", model="base").replace("[method]", f"template = {template}\n[method]"))
    assert compile_spec(workdir / "s.toml").facts.tokens is not None  # a plain-text prompt needs no chat template
