"""`ftc data` and the data checks of `ftc compile`: planted bad inputs get located, actionable errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings, write_jsonl

from ftc.compiler import SpecError, compile_spec
from ftc.cli.main import main


def spec_text(data: str, fmt: str, extra: str = "", model: str = "tiny") -> str:
    return (f'name = "t"\n[model]\nbase = "{model}"\n[data]\nsource = "{data}"\nformat = "{fmt}"\n'
            f'validation = 0.25\nmax_length = 64\n{extra}\n[method]\nkind = "lora"\n[train]\nbatch_size = 2\n'
            '[hardware]\ndevice = "cpu"\n')


@pytest.fixture
def workdir(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "tiny")
    return tmp_path


def problems(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        compile_spec(path)
    return str(info.value)


SHAREGPT = [{"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": f"say {w}"},
                               {"from": "gpt", "value": w.upper()}]} for w in "red green blue yellow".split()]


def test_ftc_data_json_counts_what_trains(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(workdir / "d.jsonl", SHAREGPT + [SHAREGPT[0]] * 2)  # two planted duplicates
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"'))
    assert main(["data", "s.toml", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows_read"] == 6 and stats["dropped"]["duplicate"] == 2 and stats["duplicates_removed"] == 2
    assert stats["splits"]["train"]["examples"] == 3 and stats["splits"]["validation"]["examples"] == 1
    dropped = [json.loads(line) for line in (workdir / "compiled/t/data/dropped.jsonl").read_text().splitlines()]
    assert [(d["row"], d["reason"]) for d in dropped] == [(5, "duplicate"), (6, "duplicate")]
    # each answer: its tokens plus <|im_end|> and the newline after it
    train = stats["splits"]["train"]
    assert 0 < train["trained_tokens"] < train["tokens"]


def test_ftc_data_renders_trained_and_masked_tokens(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(workdir / "d.jsonl", SHAREGPT)
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"'))
    assert main(["data", "s.toml", "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("tokens,") == 2 and "say" in out and "rows read" in out and "dropped rows: none" in out


def test_rendered_styles_mark_exactly_the_trained_tokens(tiny_tokenizer: Any) -> None:
    from ftc.cli.datashow import MASKED_STYLE, TRAINED_STYLE, render_example
    from ftc.core.data.stage import prepare_data

    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]}]
    item = prepare_data(rows, tiny_tokenizer, data_settings("chat", 64)).train[0]
    text = render_example(tiny_tokenizer, item)
    trained = "".join(text.plain[s.start:s.end] for s in text.spans if s.style == TRAINED_STYLE)
    masked = "".join(text.plain[s.start:s.end] for s in text.spans if s.style == MASKED_STYLE)
    assert trained == "world<|im_end|>\n"
    assert masked == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_ftc_data_reports_unmappable_roles_without_traceback(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = SHAREGPT + [{"conversations": [{"from": "narrator", "value": "x"}, {"from": "gpt", "value": "y"}]}]
    write_jsonl(workdir / "d.jsonl", rows)
    write_jsonl(workdir / "v.jsonl", rows)
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"'))
    assert main(["data", "s.toml"]) == 2
    err = capsys.readouterr().err
    assert "'narrator' (rows 5)" in err and "[data.roles]" in err and "Traceback" not in err


def test_compile_checks_the_first_row(workdir: Path) -> None:
    write_jsonl(workdir / "d.jsonl", [{"conversations": [{"from": "narrator", "value": "x"}]}])
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"'))
    assert "data.roles: d.jsonl, row 1, turn 1: role 'narrator' cannot be mapped" in problems(workdir / "s.toml")
    write_jsonl(workdir / "d.jsonl", [{"messages": "hello"}])
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "chat"))
    assert "column 'messages' must hold a list of turns" in problems(workdir / "s.toml")
    write_jsonl(workdir / "d.jsonl", [{"prompt": {"a": 1}, "completion": "x"}])
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "completion"))
    assert "column 'prompt' (prompt) holds a dict, not text" in problems(workdir / "s.toml")
    write_jsonl(workdir / "d.jsonl", [{"q": "x", "a": "y"}])
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "completion"))
    assert "has no column 'prompt'; columns found: q, a" in problems(workdir / "s.toml")


def test_compile_checks_templates_and_options(workdir: Path) -> None:
    write_jsonl(workdir / "d.jsonl", [{"instruction": "x", "output": "y"}])
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "instruction", 'template = "{{ instruction }"'))
    assert "data.template: not a valid Jinja template" in problems(workdir / "s.toml")
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "instruction", 'template = "{{ question }}"'))
    assert "uses question, which the instruction format does not have" in problems(workdir / "s.toml")
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "instruction", '[data.roles]\nbot = "assistant"'))
    assert "data.roles: maps conversation roles, but the instruction format has none" in problems(workdir / "s.toml")
    write_jsonl(workdir / "t.jsonl", [{"text": "x"}])
    (workdir / "s.toml").write_text(spec_text("t.jsonl", "text", 'train_on = "last_answer"'))
    assert "data.train_on: text data trains every token" in problems(workdir / "s.toml")


def test_compile_reports_wrong_encodings_and_bad_json(workdir: Path) -> None:
    (workdir / "d.jsonl").write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "text"))
    assert "d.jsonl:1: not UTF-8 text (byte 0xe9" in problems(workdir / "s.toml")
    (workdir / "d.jsonl").write_text('{"text": "a"}\n{"text": \n')
    assert "d.jsonl:2: not valid JSON" in problems(workdir / "s.toml")


def script_data_settings(script: str) -> Any:
    """What train.py's CONFIG assignments and its `settings = DataSettings(...)` statement build, executed."""
    import ast

    from ftc.core.data.settings import DataSettings

    tree = ast.parse(script)
    names = [getattr(n.targets[0], "id", "") if isinstance(n, ast.Assign) else "" for n in tree.body]
    call = tree.body[names.index("settings")]
    assert isinstance(call, ast.Assign) and isinstance(call.value, ast.Call)
    assert all(isinstance(k.value, ast.Name) for k in call.value.keywords)  # every field a CONFIG name
    config = [n for n in tree.body[:names.index("CONFIG")] if isinstance(n, ast.Assign)]
    namespace: dict[str, Any] = {"DataSettings": DataSettings}
    exec(compile(ast.Module([*config, call], []), "train.py", "exec"), namespace)
    return namespace["settings"]


SET_ALL = ('validation = 0.25\nmax_length = 64\ntrain_on = "last_answer"\n[data.columns]\nmessages = "conversations"\n'
           '[data.roles]\nnarrator = "system"\n[data.clean]\ndedup = false\nnear_dedup = 0.9\nmin_tokens = 2\n'
           'max_tokens = 60\nuntrained = "drop"')
SETTINGS_CASES = {  # format, rows, [data] keys, [train] keys, what the settings must hold
    "chat, defaults": ("chat", [{"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": w}]}
                                for w in "abcd"], "", "", {"validation": 0.1, "max_length": 512, "dedup": True}),  # the default 1024, capped at the tiny model's context
    "text, defaults": ("text", [{"text": w} for w in "abcd"], "", "", {"train_on": "inputs_too", "seed": 42}),
    "chat, every key set": ("chat", SHAREGPT, SET_ALL, "seed = 7", {
        "validation": 0.25, "train_on": "last_answer", "roles": {"narrator": "system"}, "near_dedup": 0.9,
        "min_tokens": 2, "max_tokens": 60, "untrained": "drop", "seed": 7, "dedup": False}),
    "completion, template": ("completion", [{"prompt": w, "completion": w} for w in "abcd"],
                             'template = "Q: {{ prompt }}"\nvalidation = "v.jsonl"', "",
                             {"template": "Q: {{ prompt }}", "validation": "v.jsonl"}),
}


@pytest.mark.parametrize("case", SETTINGS_CASES)
def test_train_py_builds_the_data_settings_the_plan_holds(workdir: Path, case: str) -> None:
    """One decision: train.py's DataSettings, built from CONFIG, is the plan's (what `ftc data` runs)
    and the compiler's, with the spec's defaults where the spec says nothing."""
    from ftc.compiler.emit import data_settings as plan_settings
    from ftc.compiler.tokens import data_settings

    fmt, rows, data_keys, train_keys, expected = SETTINGS_CASES[case]
    write_jsonl(workdir / "d.jsonl", rows)
    write_jsonl(workdir / "v.jsonl", rows)
    (workdir / "s.toml").write_text(f'[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "{fmt}"\n'
                                    f'{data_keys}\n[method]\nkind = "lora"\n[train]\nbatch_size = 2\n{train_keys}\n'
                                    '[hardware]\ndevice = "cpu"\n')
    result = compile_spec(workdir / "s.toml")
    built = script_data_settings(result.emitted.files["train.py"])
    assert built == plan_settings(result.plan) == data_settings(result.source.spec, result.plan["max_length"])
    assert {k: getattr(built, k) for k in expected} == expected


def test_chat_in_csv_cells_is_read_as_json(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv

    with (workdir / "d.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "chat"])
        for i, row in enumerate(SHAREGPT):
            writer.writerow([i, json.dumps(row["conversations"])])
    (workdir / "s.toml").write_text(spec_text("d.csv", "chat", '[data.columns]\nmessages = "chat"'))
    assert main(["data", "s.toml", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["rows_read"] == 4 and sum(s["examples"] for s in stats["splits"].values()) == 4


def test_a_bad_row_past_compiles_rows_stops_ftc_data_and_the_run_alike(workdir: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import run_ftc

    rows = [{"text": f"row {i}"} for i in range(1499)]
    (workdir / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "[1, 2]\n", encoding="utf-8")
    (workdir / "s.toml").write_text(spec_text("d.jsonl", "text").replace("[train]\n", "[train]\nmax_steps = 1\n"))
    message = "d.jsonl:1500: a row must be a JSON object with the data's columns (got an array)"
    assert main(["data", "s.toml"]) == 2
    assert f"error: s.toml: {message}" in capsys.readouterr().err
    done = run_ftc("run", "s.toml", "--run-dir", "r", "--no-tui", cwd=workdir)
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_validation_equal_to_the_training_file_is_a_spec_error(workdir: Path) -> None:
    write_jsonl(workdir / "d.jsonl", SHAREGPT)
    spec = spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"')
    (workdir / "s.toml").write_text(spec.replace("validation = 0.25", 'validation = "./d.jsonl"'))
    assert "data.validation: d.jsonl is training data too" in problems(workdir / "s.toml")


def test_ftc_data_refuses_a_negative_count(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "s.toml", "-n", "-5"])
    assert info.value.code == 2 and "-n: must be between 0 and 10000 (got -5)" in capsys.readouterr().err


def test_the_planned_steps_count_the_rows_cleaning_keeps_and_packing_fills(workdir: Path) -> None:
    write_jsonl(workdir / "d.jsonl", SHAREGPT * 2)  # 8 rows, 4 of them duplicates
    spec = spec_text("d.jsonl", "chat", '[data.columns]\nmessages = "conversations"').replace(
        "[train]\n", "[train]\nepochs = 1\n")
    (workdir / "s.toml").write_text(spec)
    # 4 rows kept, 1 held out (0.25, rounded up), 3 in batches of 2
    assert compile_spec(workdir / "s.toml").plan["total_steps"] == 2
    (workdir / "s.toml").write_text(spec.replace("max_length = 64", "max_length = 256\npacking = true"))
    assert compile_spec(workdir / "s.toml").plan["total_steps"] == 1  # the 3 short rows pack into one
