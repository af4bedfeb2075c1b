"""Strict types, ignored-key conflicts, bounds and safe names in spec loading (issue 18)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import write_jsonl

from ftc.cli.main import main
from ftc.compiler import SpecError, compile_spec
from ftc.compiler.load import locate

GOOD = """\
name = "t"
[model]
base = "model"
[data]
source = "d.jsonl"
format = "completion"
[data.columns]
prompt = "q"
completion = "a"
[method]
kind = "lora"
[train]
[hardware]
device = "cpu"
[eval]
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}))
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"x{i}", "a": "y"} for i in range(10)])
    return tmp_path


def with_line(table: str, line: str, text: str = GOOD) -> str:
    return text.replace(f"[{table}]\n", f"[{table}]\n{line}\n", 1)


def problems(text: str, workdir: Path, name: str = "s.toml") -> list[str]:
    (workdir / name).write_text(text)
    with pytest.raises(SpecError) as info:
        compile_spec(workdir / name)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("table", "line", "expected"), [
    ("model", 'trust_remote_code = "yes"', "s.toml:3: model.trust_remote_code: expected true or false, got 'yes' "
     "(a string); write trust_remote_code = true or trust_remote_code = false, without quotes"),
    ("model", "trust_remote_code = 1", "s.toml:3: model.trust_remote_code: expected true or false, got 1 (an "
     "integer); write trust_remote_code = true or trust_remote_code = false (TOML booleans, not 1 or 0)"),
    ("data", 'packing = "true"', "s.toml:5: data.packing: expected true or false, got 'true' (a string); "
     "write packing = true, without quotes"),
    ("method", 'r = "8"', "s.toml:11: method.r: expected an integer, got '8' (a string); write r = 8, without quotes"),
    ("method", "r = 8.0", "s.toml:11: method.r: expected an integer, got 8.0 (a float); write r = 8 (a whole number)"),
    ("train", "epochs = true", "s.toml:13: train.epochs: expected a number, got True (a boolean); write a number "
     "without quotes (TOML's true is a boolean)"),
    ("train", "batch_size = true", "s.toml:13: train.batch_size: expected an integer, got True (a boolean)"),
    ("train", 'micro_batch_size = "4"', "s.toml:13: train.micro_batch_size: expected an integer or 'auto', got '4' "
     "(a string); write micro_batch_size = 4, without quotes"),
    ("train", "gradient_checkpointing = 1", "train.gradient_checkpointing: expected true or false or 'auto', got 1"),
    ("data", "validation = true", "data.validation: expected a number or a string in quotes, got True (a boolean)"),
])
def test_values_keep_their_toml_types(workdir: Path, table: str, line: str, expected: str) -> None:
    found = problems(with_line(table, line), workdir)
    assert len(found) == 1 and expected in found[0], found


def test_an_integer_is_a_float(workdir: Path) -> None:
    (workdir / "s.toml").write_text(with_line("hardware", "vram_gb = 24", with_line("method", "alpha = 16")))
    assert compile_spec(workdir / "s.toml").source.spec.hardware.vram_gb == 24.0


@pytest.mark.parametrize(("text", "expected"), [
    (with_line("method", "double_quant = false"), "s.toml:11: method.double_quant: is read only with quantize = "
     "'nf4', but kind = 'lora' loads the base with no quantization, so it would be ignored; remove double_quant or "
     "set quantize = 'nf4'"),
    (GOOD.replace('kind = "lora"', 'kind = "lora8"\ndouble_quant = true'), "s.toml:12: method.double_quant: is read "
     "only with quantize = 'nf4', but kind = 'lora8' loads the base with quantize = 'int8', so it would be ignored; "
     "remove double_quant"),
    (GOOD.replace('kind = "lora"', 'kind = "qlora"\nint8_threshold = 6.0'), "s.toml:12: method.int8_threshold: is "
     "read only with quantize = 'int8', but kind = 'qlora'"),
    (GOOD.replace('kind = "lora"', 'kind = "ia3"\nquantize = "int8"\ndouble_quant = true'), "s.toml:13: "
     "method.double_quant: is read only with quantize = 'nf4', but kind = 'ia3' loads the base with quantize = 'int8'"),
    (GOOD.replace('kind = "lora"', 'kind = "prefix"\nencoder_hidden_size = 64'), "s.toml:12: "
     "method.encoder_hidden_size: is the width of the projection MLP, but method.projection = false"),
    (GOOD.replace('kind = "lora"', 'kind = "freeze"\nlayers = 0\nhead = true\nmodules = ["mlp"]'), "s.toml:14: "
     "method.modules: chooses weights inside the trained blocks, but method.layers = 0"),
    (with_line("eval", "max_new_tokens = 10"), "s.toml:16: eval.max_new_tokens: is the answer length of "
     "eval.compare, which is 0 (off)"),
    (with_line("train", "max_steps = 5\nepochs = 2"), "s.toml:14: train.epochs: is ignored because train.max_steps "
     "is set"),
    (with_line("train", 'on_nan = "stop"\nnan_patience = 5'), "s.toml:14: train.nan_patience: is read by on_nan"),
    (with_line("train", 'scheduler = "constant"\nwarmup = 0.1'), "s.toml:14: train.warmup: is ignored by "
     "train.scheduler = \"constant\""),
    (with_line("data", 'split = "test"'), "s.toml:5: data.split: names a split of a hub or saved dataset, but "
     "data.source (d.jsonl) is data files"),
    (with_line("model", 'revision = "main"'), "s.toml:3: model.revision: picks a hub revision, but model.base "
     "(model) is a local model"),
])
def test_an_ignored_key_is_an_error_naming_both(workdir: Path, text: str, expected: str) -> None:
    found = problems(text, workdir)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_validation_share_that_takes_every_row(workdir: Path) -> None:
    write_jsonl(workdir / "one.jsonl", [{"q": "x", "a": "y"}])
    found = problems(GOOD.replace("d.jsonl", "one.jsonl"), workdir)
    assert found == ["s.toml:4: data.validation: holds out 1 of the 1 row(s) of one.jsonl (validation = 0.1: rounded "
                     "up), leaving none to train on; add rows, or set validation = 0 or a second source"]


@pytest.mark.parametrize(("table", "line", "expected"), [
    ("hardware", "vram_gb = 1e300", "hardware.vram_gb: input should be less than or equal to 1048576"),
    ("train", "epochs = 1e308", "train.epochs: input should be less than or equal to 10000"),
    ("train", f"batch_size = {2**63 - 1}", "train.batch_size: input should be less than or equal to 65536"),
    ("train", "seed = -1", "train.seed: input should be greater than or equal to 0"),
    ("train", f"seed = {2**40}", "train.seed: input should be less than or equal to 4294967295"),
    ("method", "target_modules = []", "method.target_modules: is an empty array; give at least 1 item(s)"),
    ("model", 'revision = "../../x"', "model.revision: is not a branch, tag or commit name (got '../../x')"),
    ("model", 'revision = "main/../../x"', "model.revision: is not a branch, tag or commit name"),
    ("train", "warmup = nan", "train.warmup: input should be a finite number"),
])
def test_numbers_and_names_are_bounded(workdir: Path, table: str, line: str, expected: str) -> None:
    found = problems(with_line(table, line), workdir)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('base = "model"', 'base = "' + "m" * 5000 + '"', "s.toml:3: model.base: string should have at most 4096"),
    ('source = "d.jsonl"', 'source = "' + "d" * 300 + '.jsonl"', "s.toml:5: data.source: has a path component of "
     "306 characters (at most 255: the file system's limit)"),
])
def test_paths_too_long_for_the_file_system(workdir: Path, old: str, new: str, expected: str) -> None:
    found = problems(GOOD.replace(old, new), workdir)
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_revision_of_a_hub_model_may_have_slashes(workdir: Path) -> None:
    text = GOOD.replace('base = "model"', 'base = "Qwen/Qwen2.5-0.5B-Instruct"\nrevision = "refs/pr/1"')
    (workdir / "s.toml").write_text(text)
    assert compile_spec(workdir / "s.toml").source.spec.model.revision == "refs/pr/1"


def test_a_file_stem_that_cannot_name_a_folder(workdir: Path) -> None:
    found = problems(GOOD.replace('name = "t"\n', ""), workdir, name="...toml")
    assert found == ["...toml: the file name '..' cannot name the compiled/ and runs/ folders (letters, digits, '.', "
                     "'_' and '-', starting with a letter or digit); add name = \"my-run\" to the spec or rename the file"]
    assert main(["compile", "...toml"]) == 2 and not (workdir / "compiled").exists()


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: os.mkfifo(p), "is not a regular file (a pipe, socket or device)"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"#" * (1 << 20) + b"\n"), "is 1,048,577 bytes; a spec is at most 1,048,576 bytes"),
    (lambda p: p.write_text("a = " + "[" * 600 + "]" * 600), "nested too deep to read"),
    (lambda p: p.write_text("a = " + "[" * 40 + "]" * 40), "arrays or tables nested more than 32 levels deep; a spec "
     "nests at most 32"),
])
def test_spec_files_that_are_refused_before_reading(workdir: Path, make, expected: str) -> None:  # type: ignore[no-untyped-def]
    make(workdir / "x.toml")
    with pytest.raises(SpecError) as info:
        compile_spec(workdir / "x.toml")
    assert expected in str(info.value)


def test_many_unknown_keys_are_counted_fast(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = with_line("train", "".join(f"k{i} = 1\n" for i in range(20_000)).rstrip("\n"))
    (workdir / "s.toml").write_text(text)
    start = time.perf_counter()
    assert main(["compile", "s.toml"]) == 2
    took = time.perf_counter() - start
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("s.toml:13: train.k0: unknown key in train")
    assert err[-2:] == ["... and 19950 more problems", "20000 problems in the spec; nothing was written"]
    assert len(err) == 52 and took < 20, took  # was quadratic in the locator: minutes


def test_locate_is_the_first_line_at_or_under_the_key() -> None:
    text = "[model]\nbase = 1\n[method]\nkind = 'x'\nr = 2\n[[data.mix]]\nsource = 'a'\n"
    assert locate(text, ("method", "r")) == 5
    assert locate(text, ("method", "alpha")) == 3  # the table's header
    assert locate(text, ("data",)) == 6 and locate(text, ("data", "mix", "0", "source")) == 6
    assert locate(text, ("eval", "steps")) is None


def test_a_quantization_knob_is_not_carried_to_a_fallback_that_cannot_read_it(workdir: Path) -> None:
    """A does-not-fit message estimates lighter kinds with the spec's shared knobs: `lora` (no
    quantization) must not get dora's double_quant, which it would refuse."""
    from ftc.core.errors import BudgetError

    text = GOOD.replace('base = "model"', 'base = "meta-llama/Llama-3.1-8B"').replace(
        'kind = "lora"', 'kind = "dora"\nquantize = "nf4"\ndouble_quant = false').replace(
        'device = "cpu"', 'device = "cuda"\nvram_gb = 2')
    (workdir / "s.toml").write_text(text)
    with pytest.raises(BudgetError, match="the run does not fit"):
        compile_spec(workdir / "s.toml")
