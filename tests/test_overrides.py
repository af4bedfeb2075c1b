"""`--set key.path=value` on compile, plan and run: parsed as TOML (else a plain string), validated like
the file with errors naming the flag, and recorded as `flag: --set ...` in plan.json, plan.md and train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.cli.main import main
from ftc.compiler.compile import compile_spec
from ftc.compiler.overrides import parse_overrides, parse_value
from ftc.core.errors import SpecError

REPO = Path(__file__).resolve().parent.parent
DEMO = str(REPO / "specs" / "demo.toml")


@pytest.mark.parametrize(("text", "value"), [
    ("2", 2), ("1e-4", 1e-4), ("true", True), ('"2024"', "2024"), ("2024", 2024), ("x.jsonl", "x.jsonl"),
    ("org/name", "org/name"), ('["q_proj", "v_proj"]', ["q_proj", "v_proj"]), ("{ r = 4 }", {"r": 4}),
    ("my file.jsonl", "my file.jsonl"),
])
def test_value_rule(text: str, value: object) -> None:
    assert parse_value(text) == value


def test_malformed_flags_are_all_reported() -> None:
    with pytest.raises(SpecError) as caught:
        parse_overrides(["epochs", "train.epochs=", "train..x=1", "train.epochs=2"])
    files = [p.file for p in caught.value.problems]
    assert files == ["--set epochs", "--set train.epochs=", "--set train..x=1"]


def test_overrides_change_the_plan_with_provenance(tmp_path: Path) -> None:
    flags = parse_overrides(["train.epochs=1", "method.r=4", "data.columns.prompt=sentence"])
    result = compile_spec(DEMO, tmp_path, flags)
    result.write()
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["settings"]["epochs"] == 1 and plan["settings"]["r"] == 4
    assert plan["provenance"]["epochs"] == "flag: --set train.epochs=1"
    assert plan["provenance"]["r"] == "flag: --set method.r=4"
    assert plan["provenance"]["columns"] == "flag: --set data.columns.prompt=sentence"
    assert plan["provenance"]["learning_rate"] == "spec: train.learning_rate"  # untouched keys keep theirs
    assert plan["overrides"] == ["--set train.epochs=1", "--set method.r=4", "--set data.columns.prompt=sentence"]
    assert plan["spec"].endswith("demo.toml")
    md = (tmp_path / "plan.md").read_text()
    assert "with `--set train.epochs=1`" in md and "| epochs | `1.0` | flag: --set train.epochs=1 |" in md
    script = (tmp_path / "train.py").read_text()
    assert script.splitlines()[0].count("'--set train.epochs=1'") == 1
    assert "EPOCHS = 1.0 " in script and "# flag: --set train.epochs=1" in script
    compile(script, "train.py", "exec")


def test_without_flags_nothing_changes(tmp_path: Path) -> None:
    plain = compile_spec(DEMO, tmp_path).emitted.files
    assert "overrides" not in json.loads(plain["plan.json"]) and "--set" not in plain["train.py"]


def test_shape_errors_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEMO, "--set", "train.epochs=0", "--set", "method.rr=3", "--set", "name=2024"]) == 2
    err = capsys.readouterr().err
    assert "--set train.epochs=0: train.epochs: input should be greater than 0 (got 0)" in err
    assert "--set method.rr=3: method.rr: unknown key in method; did you mean 'r'?" in err
    assert "--set name=2024: name: expected a string in quotes, got 2024 (an integer)" in err and "--set name='\"2024\"'" in err
    assert "3 problems in the spec" in err


def test_check_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", DEMO, "--out", str(tmp_path / "c"), "--set", "data.source=nope.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("--set data.source=nope.jsonl: data.source: file not found: nope.jsonl")
    assert not (tmp_path / "c").exists()


def test_a_value_where_a_table_is_needed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEMO, "--set", "train=3", "--set", "data.columns=1", "--set", "data.columns.x=y"]) == 2
    err = capsys.readouterr().err
    assert "--set data.columns.x=y: data.columns.x: data.columns is int 1, not a table" in err


def test_flag_text_that_could_break_a_comment_is_quoted(tmp_path: Path) -> None:
    flags = parse_overrides(["name=demo\nimport os"])
    assert flags[0].flag == "--set 'name=demo\\nimport os'"


def test_plan_json_and_run_accept_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", DEMO, "--json", "--set", "train.batch_size=4"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["settings"]["batch_size"] == 4 and plan["provenance"]["batch_size"] == "flag: --set train.batch_size=4"
    # run: a bad flag stops before anything is compiled or started
    assert main(["run", DEMO, "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "c"), "--no-tui",
                 "--set", "train.max_steps=-1"]) == 2
    assert "--set train.max_steps=-1: train.max_steps" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()
