"""Spec validation through the public entry points: located, actionable errors, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from ftc.compiler import SpecError, compile_spec
from ftc.cli.main import main

GOOD = """\
name = "t"
[model]
base = "{model}"
[data]
source = "{data}"
format = "completion"
[data.columns]
prompt = "q"
completion = "a"
[method]
kind = "lora"
[hardware]
device = "cpu"
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                   "num_hidden_layers": 2, "num_attention_heads": 4,
                                                   "vocab_size": 100}))
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "y"}] * 10)
    return tmp_path


def problems(text: str, workdir: Path) -> list[str]:
    (workdir / "s.toml").write_text(text)
    with pytest.raises(SpecError) as info:
        compile_spec(workdir / "s.toml")
    return [str(p) for p in info.value.problems]


def good(**changes: str) -> str:
    return GOOD.format(model="model", data="d.jsonl")


def test_good_spec_compiles(workdir: Path) -> None:
    (workdir / "s.toml").write_text(good())
    result = compile_spec(workdir / "s.toml")
    assert result.plan["micro_batch_size"] * result.plan["grad_accum"] == result.plan["batch_size"]
    assert result.out_dir == Path("compiled/t")


def test_misspelt_key_has_line_and_did_you_mean(workdir: Path) -> None:
    found = problems(good().replace('kind = "lora"', 'kind = "lora"\nrnak = 8'), workdir)
    assert found == ["s.toml:12: method.rnak: unknown key in method; did you mean 'r'?"]


def test_every_problem_is_reported_at_once(workdir: Path) -> None:
    text = good().replace('format = "completion"', 'format = "completoin"').replace(
        '[hardware]', '[train]\nbatch_size = 0\nepochs = "three"\n[hardware]\nvram = 3')
    found = problems(text, workdir)
    assert "s.toml:6: data.format: not an allowed value (got 'completoin'); did you mean 'completion'?" in found
    assert any(p.startswith("s.toml:13: train.batch_size: input should be greater than 0 (got 0)") for p in found)
    assert any(p.startswith("s.toml:14: train.epochs:") and "expected a number, got 'three' (a string)" in p for p in found)
    assert "s.toml:16: hardware.vram: unknown key in hardware; did you mean 'vram_gb'?" in found
    assert len(found) == 4


def test_unknown_method_kind(workdir: Path) -> None:
    found = problems(good().replace('kind = "lora"', 'kind = "qlroa"'), workdir)
    assert found == ["s.toml:11: method.kind: unknown method (got 'qlroa'); did you mean 'qlora'?"]


def test_toml_syntax_error_is_located(workdir: Path) -> None:
    found = problems(good().replace('source = "d.jsonl"', 'source = "d.jsonl'), workdir)
    assert len(found) == 1 and found[0].startswith("s.toml:5: TOML syntax error:")


def test_missing_column_names_the_columns_found(workdir: Path) -> None:
    found = problems(good().replace('completion = "a"', 'completion = "answer"'), workdir)
    assert found == ["s.toml:9: data.columns.completion: the completion format needs a 'completion' field, "
                     "but d.jsonl has no column 'answer'; columns found: q, a; fix the mapping"]


def test_unmapped_required_field_suggests_mapping(workdir: Path) -> None:
    text = good().replace('[data.columns]\nprompt = "q"\ncompletion = "a"\n', "")
    found = problems(text, workdir)
    assert "s.toml:5: data.source: the completion format needs a 'prompt' field, but d.jsonl has no column " \
           "'prompt'; columns found: q, a; set data.columns.prompt to one of them" in found


def test_missing_data_file_and_unknown_model(workdir: Path) -> None:
    text = GOOD.format(model="smollm2-135m-instrct", data="nope.jsonl")
    found = problems(text, workdir)
    assert found[0].startswith("s.toml:3: model.base: unknown model (got 'smollm2-135m-instrct');")
    assert "did you mean 'smollm2-135m-instruct'?" in found[0]
    assert found[1].startswith("s.toml:5: data.source: file not found: nope.jsonl (relative paths are resolved")


def test_bad_jsonl_line_is_located(workdir: Path) -> None:
    (workdir / "d.jsonl").write_text('{"q": "x", "a": "y"}\n{"q": oops}\n')
    found = problems(good(), workdir)
    assert found[0].startswith("s.toml:5: data.source: d.jsonl:2: not valid JSON")


def test_cuda_needs_a_budget_and_batch_must_divide(workdir: Path) -> None:
    text = good().replace('device = "cpu"', 'device = "cuda"').replace(
        "[hardware]", "[train]\nbatch_size = 16\nmicro_batch_size = 3\n[hardware]")
    found = problems(text, workdir)
    assert any("hardware: a cuda run needs a memory budget" in p for p in found)
    assert any("train.micro_batch_size: 3 does not divide the 16 examples" in p for p in found)


def test_remote_code_needs_opt_in(workdir: Path) -> None:
    config = json.loads((workdir / "model" / "config.json").read_text())
    (workdir / "model" / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    found = problems(good(), workdir)
    assert found == ["s.toml:2: model.trust_remote_code: the model ships its own Python code (auto_map in "
                     "config.json); set trust_remote_code = true only if you trust its authors"]


def test_cli_exit_code_and_no_traceback(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "s.toml").write_text(good().replace('kind = "lora"', 'kind = "lora"\nalpah = 3'))
    assert main(["compile", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert "s.toml:12: method.alpah: unknown key in method; did you mean 'alpha'?" in err
    assert "Traceback" not in err and "1 problem in the spec" in err
    assert not (workdir / "compiled").exists()


def test_cli_missing_spec_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "missing.toml"]) == 2
    assert "missing.toml: spec file not found" in capsys.readouterr().err


def _method(workdir: Path, block: str) -> list[str]:
    return problems(good().replace('kind = "lora"', block), workdir)


def test_method_combinations_peft_cannot_run_are_refused_with_why(workdir: Path) -> None:
    found = _method(workdir, 'kind = "dora"\nquantize = "int8"')
    assert len(found) == 1 and "method: method.quantize = 'int8' cannot be combined with kind = 'dora'" in found[0]
    assert "use \"nf4\" (QDoRA, on CUDA) or \"none\"" in found[0]
    found = _method(workdir, 'kind = "pissa"\nquantize = "nf4"')
    assert len(found) == 1 and "PiSSA rewrites the base weights" in found[0]
    found = _method(workdir, 'kind = "llama_adapter"\nquantize = "nf4"')
    assert len(found) == 1 and found[0].startswith("s.toml:12: method.quantize: unknown key in method")


def test_method_names_are_checked_against_the_architecture(workdir: Path) -> None:
    found = _method(workdir, 'kind = "lora"\ntarget_modules = ["q_proj", "v_prj"]')
    assert found == ["s.toml:12: method.target_modules: llama blocks have no linear layer named 'v_prj'; "
                     "did you mean 'v_proj'? their linear layers are q_proj, k_proj, v_proj, o_proj, gate_proj, "
                     "up_proj, down_proj"]
    found = _method(workdir, 'kind = "freeze"\nlayers = 3\nmodules = ["attn", "ffn"]')
    assert any("method.layers: the model has 2 decoder blocks; method.layers must be at most 2 (got 3)" in p
               for p in found)
    assert any("method.modules: 'ffn' matches no weight of a llama block" in p for p in found)
    assert len(found) == 2  # "attn" matches self_attn.*


def test_method_presets_and_empty_choices(workdir: Path) -> None:
    found = _method(workdir, 'kind = "linear_probe"\nlayers = 2')
    assert len(found) == 1 and found[0].startswith("s.toml:12: method.layers:")
    found = _method(workdir, 'kind = "freeze"\nlayers = 0')
    assert len(found) == 1 and "trains nothing" in found[0]


def test_llama_adapter_needs_a_supported_architecture(workdir: Path) -> None:
    config = json.loads((workdir / "model/config.json").read_text())
    (workdir / "model/config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
    found = _method(workdir, 'kind = "llama_adapter"')
    assert found == ["s.toml:11: method.kind: LLaMA-Adapter supports llama and mistral models, not qwen2; "
                     "use kind = \"prefix\" (adapters at every layer) or \"lora\""]


def test_auto_target_modules_are_named_in_the_script(workdir: Path) -> None:
    (workdir / "s.toml").write_text(good())
    result = compile_spec(workdir / "s.toml")
    assert result.plan["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"]
    assert "# derived: every linear layer of a llama block" in result.emitted.files["train.py"]


def test_prefix_refuses_forced_checkpointing_and_plans_without(workdir: Path) -> None:
    found = problems(good().replace('kind = "lora"', 'kind = "prefix"').replace(
        "[hardware]", "[train]\ngradient_checkpointing = true\n[hardware]"), workdir)
    assert len(found) == 1 and found[0].startswith("s.toml:13: train.gradient_checkpointing: kind = 'prefix' does not")
    (workdir / "s.toml").write_text(good().replace('kind = "lora"', 'kind = "prefix"').replace(
        "[hardware]", "[hardware]\nvram_gb = 1000"))
    assert compile_spec(workdir / "s.toml").plan["gradient_checkpointing"] is False


def test_qdora_is_refused_on_cpu_with_the_measurement(workdir: Path) -> None:
    found = _method(workdir, 'kind = "dora"\nquantize = "nf4"')
    assert len(found) == 1 and found[0].startswith("s.toml:12: method.quantize: DoRA on a 4-bit base does not learn "
                                                   "on CPU")
    assert "validation loss 10.1 -> 10.05" in found[0] and 'kind = "qlora"' in found[0]
    (workdir / "s.toml").write_text(good().replace('kind = "lora"', 'kind = "dora"\nquantize = "nf4"').replace(
        'device = "cpu"', 'device = "cuda"\nvram_gb = 24'))
    assert compile_spec(workdir / "s.toml").plan["quantization"] == "nf4"
