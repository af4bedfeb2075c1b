"""Broken model directories, templates that run away, and prompts past the model's context: a located
error (which file, what is wrong, how to fix) with exit 2, within seconds, never an internal error."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import CHATML, data_settings, write_jsonl

from ftc.cli.main import main
from ftc.compiler.compile import compile_spec
from ftc.core.errors import SpecError, UsageError
from ftc.core.sandbox import MAX_LOOP_STEPS, TemplateLimit, bounded_environment

CONFIG = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "vocab_size": 100}
SPEC = ('[model]\nbase = "model"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n{data}'
        '[method]\nkind = "lora"\n[hardware]\ndevice = "cpu"\n')
LOOP_BOMB = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def spec_problems(workdir: Path, data: str = "") -> list[str]:
    (workdir / "s.toml").write_text(SPEC.format(data=data))
    with pytest.raises(SpecError) as info:
        compile_spec(workdir / "s.toml")
    return [str(p) for p in info.value.problems]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(CONFIG))
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": f"one two {i}", "completion": "three"} for i in range(20)])
    return tmp_path


@pytest.mark.parametrize("name, write, says", [
    ("config.json", lambda p: p.write_bytes('{"model_type": "llama", "name": "caf\xe9"}'.encode("latin-1")),
     "config.json: not UTF-8 text"),
    ("config.json", lambda p: (p.unlink(), p.mkdir()), "config.json is a directory, not a model config file"),
    ("config.json", lambda p: p.write_text("[" * 100_000), "config.json: JSON nested too deeply"),
    ("config.json", lambda p: p.write_text('{"hidden_size": 0}'), "hidden_size must be a positive integer (got 0)"),
    ("config.json", lambda p: p.write_text('{"num_attention_heads": -4}'), "num_attention_heads must be a positive"),
    ("config.json", lambda p: p.write_text('{"vocab_size": "100"}'),
     'vocab_size must be a positive integer (got "100")'),
    ("config.json", lambda p: p.write_text('{"hidden_size": 1e300}'), "hidden_size must be a positive integer"),
    ("config.json", lambda p: p.write_text('{"num_hidden_layers": true}'), "num_hidden_layers must be a positive"),
    ("tokenizer_config.json", lambda p: p.write_text("{garbage"), "tokenizer_config.json: not valid JSON (line 1"),
    ("tokenizer_config.json", lambda p: p.write_text("[1]"), "tokenizer_config.json does not hold a JSON object"),
    ("tokenizer_config.json", lambda p: p.mkdir(), "tokenizer_config.json is a directory"),
    ("chat_template.jinja", lambda p: p.write_bytes(b"\xff\xfe{{ x }}"),
     "chat_template.jinja: cannot be read as UTF-8"),
], ids=["latin1", "config-dir", "deep", "zero", "negative", "string", "float", "bool", "tok-garbage", "tok-list",
        "tok-dir", "template-bytes"])
def test_a_broken_model_dir_is_a_located_spec_error(workdir: Path, name: str, write: Any, says: str) -> None:
    write(workdir / "model" / name)
    found = spec_problems(workdir)
    assert len(found) == 1 and found[0].startswith("s.toml:2: model.base: ") and says in found[0], found
    assert str(workdir / "model" / name) in found[0] or f"model/{name}" in found[0]


def test_a_broken_model_dir_exits_2_through_the_cli(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "model" / "config.json").write_bytes(b'{"a": "\xe9"}')
    (workdir / "s.toml").write_text(SPEC.format(data=""))
    for command in ("compile", "plan", "data", "run"):
        assert main([command, "s.toml"]) == 2, command
        err = capsys.readouterr().err
        assert "config.json: not UTF-8 text" in err and "internal error" not in err


def test_ftc_data_without_a_loadable_tokenizer_exits_2(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "s.toml").write_text(SPEC.format(data="validation = 0\n"))  # a config-only model dir compiles
    assert main(["data", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: s.toml: the tokenizer of model cannot be loaded (") and "internal error" not in err


@pytest.fixture
def tiny_workdir(workdir: Path, tiny_model: Path) -> Path:
    shutil.rmtree(workdir / "model")
    shutil.copytree(tiny_model, workdir / "model")
    return workdir


def test_a_garbage_tokenizer_json_is_named(tiny_workdir: Path) -> None:
    (tiny_workdir / "model" / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    found = spec_problems(tiny_workdir)
    assert any("tokenizer.json: the tokenizers library cannot read it" in p and "model.base" in p for p in found), found


def test_a_chat_template_that_loops_for_ever_is_refused_at_compile(tiny_workdir: Path) -> None:
    config = json.loads((tiny_workdir / "model" / "tokenizer_config.json").read_text())
    (tiny_workdir / "model" / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": LOOP_BOMB}))
    (tiny_workdir / "model" / "chat_template.jinja").unlink(missing_ok=True)
    started = time.monotonic()
    found = spec_problems(tiny_workdir)
    assert time.monotonic() - started < 10
    assert any("data.source: d.jsonl:1: the model's chat template: the template ran more than "
               f"{MAX_LOOP_STEPS:,} loop steps" in p for p in found), found


def test_the_run_bounds_the_chat_template_through_transformers(tiny_model: Path) -> None:
    """train.py renders the chat template with transformers' sandbox: the data stage's deadline stops it."""
    from transformers import AutoTokenizer

    from ftc.core.data.encode import DataError, encode_all
    from ftc.core.data.load import Source

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.chat_template = LOOP_BOMB
    example = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}
    started = time.monotonic()
    with pytest.raises(DataError, match=r"d.jsonl:7: the model's chat template: the template ran for more than"):
        encode_all(tokenizer, [(0, 7, example)], data_settings("chat"), [Source("d.jsonl", [])])
    assert time.monotonic() - started < 10


def test_a_data_template_that_loops_for_ever_is_refused_at_compile(tiny_workdir: Path) -> None:
    template = "{% for i in range(100000) %}{% for j in range(100000) %}{{ prompt }}{% endfor %}{% endfor %}"
    started = time.monotonic()
    found = spec_problems(tiny_workdir, f"template = {json.dumps(template)}\n")
    assert time.monotonic() - started < 10
    assert any("data.template cannot render it (TemplateLimit" in p and "d.jsonl:1:" in p for p in found), found


def test_the_data_stage_bounds_data_template_at_run_time_too() -> None:
    """train.py's data stage (ftc.core.data.mapping, no compiler) renders data.template in the same sandbox."""
    from ftc.core.data.encode import DataError
    from ftc.core.data.load import Source
    from ftc.core.data.mapping import map_rows

    settings = data_settings("completion", template="{% for i in range(100000) %}{% for j in range(100000) %}"
                             "{% endfor %}{% endfor %}{{ prompt }}")
    started = time.monotonic()
    with pytest.raises(DataError, match=r"d.jsonl:1: data.template cannot render it \(TemplateLimit"):
        map_rows([Source("d.jsonl", [{"prompt": "p", "completion": "c"}])], 0, settings, [])
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("source, says", [
    (LOOP_BOMB, "loop steps"), ("{{ 'x' * 10**10 }}", "repeats a value"), ("{{ 2 ** (10 ** 10) }}", "bits"),
    ("{{ 'x'.ljust(10000000000) }}", "a call in the template got"), ("{{ 'x'|center(10000000000) }}", "a filter"),
    ("{% set ns = namespace(s='xx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
     "built a value"),
    ("{% for i in range(100000) %}{{ 'abcdefghijk' }}{% endfor %}", "rendered more than"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{{ i|string|length }}{% endfor %}{% endfor %}",
     "loop steps|ran for more than"),  # whichever bound comes first on a loaded machine
], ids=["nested-loops", "repeat", "power", "ljust", "center", "doubling", "output", "busy-loops"])
def test_the_sandbox_stops_runaway_templates_within_seconds(source: str, says: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateLimit, match=says):
        bounded_environment().from_string(source).render()
    assert time.monotonic() - started < 5


def test_the_sandbox_renders_ordinary_templates_as_jinja_does() -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    messages = [{"role": "user", "content": "hi [/x]"}, {"role": "assistant", "content": "ho"}] * 50
    for source in (CHATML, "{{ messages|map(attribute='role')|join(',') }} {{ 3 * 4 }} {{ 'ab' * 3 }} {{ 2 ** 10 }}",
                   "{% for m in messages %}{{ loop.index }}{{ m.content|upper|center(9) }}{% endfor %}",
                   "{% for m in messages[1:] %}{% if loop.last %}{{ loop.length }}{{ m.role }}{% endif %}"
                   "{% else %}none{% endfor %}{% set ns = namespace(n=0) %}{% for m in messages if m.role == 'user' %}"
                   "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}{{ (messages|selectattr('role', 'eq', 'user')|list)"
                   "|length }}{% for k, v in {'a': 1}.items() %}{{ k ~ v }}{% endfor %}"):
        expected = ImmutableSandboxedEnvironment().from_string(source).render(messages=messages)
        assert bounded_environment().from_string(source).render(messages=messages) == expected


# ------------------------------------------------------------------------------------------ generate

class _Config:
    max_position_embeddings = 512


class _Model:
    config = _Config()


def test_a_prompt_past_the_context_is_refused(tiny_tokenizer: Any) -> None:
    from ftc.cli.adapters import check_prompt

    assert check_prompt(_Model(), tiny_tokenizer, "hello world", 64) < 20
    started = time.monotonic()
    with pytest.raises(UsageError, match=r"--prompt is [\d,]+ tokens in the chat template; with --max-new-tokens 64 "
                                         r"that is past the model's context of 512 tokens.*at most 448 tokens"):
        check_prompt(_Model(), tiny_tokenizer, "hello world " * 10_000, 64)  # 120 KB
    assert time.monotonic() - started < 5
    with pytest.raises(UsageError, match="lower --max-new-tokens below 512"):
        check_prompt(_Model(), tiny_tokenizer, "hi", 600)
    with pytest.raises(UsageError, match="more than ftc generate takes"):
        check_prompt(_Model(), tiny_tokenizer, "x" * 2_000_000, 64)
