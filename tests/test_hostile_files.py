"""Hostile or broken files that ftc itself wrote (events.jsonl, plan.json, a finished run's result), text
from input that a terminal would read as markup or control sequences, and output folders that cannot be
written: each gets a located message (or is skipped and counted), never an internal error (exit 3)."""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path

import pytest

from ftc.cli.console import SafeConsole
from ftc.cli.main import main
from ftc.core.errors import Problem
from ftc.core.events import EventTail, event_problem
from ftc.core.paths import output_dir_problem
from ftc.core.text import markup_safe, printable
from ftc.tui.state import read_plan, read_state

ESC = "\x1b"
BAD_LINES = [
    '{"type": "start", "time": 1.0, "config": [1, 2]}',    # a list config
    '{"type": "step", "time": NaN, "step": 1, "loss": 1.0}',  # a NaN time
    '{"type": "step", "time": 2.0, "step": 2, "loss": "high"}',  # a string loss
    '{"type": "step", "time": 2.5, "step": "3"}',             # a string step
    '{"type": "eval", "time": 2.6, "st',                     # not JSON (torn by a crash)
    '{"type": "checkpoint", "time": 2.7, "step": 99999999999999999999999999}',  # past any real step
    "[1, 2, 3]",                                              # not an object
    '"just a string"',
    '{"time": 4}',                                            # no type
    '{"type": 7, "time": 4}',                                 # a number type
    '{"type": "status", "time": 4, "state": ["failed"]}',     # a list state
    "[" * 100_000,                                            # deeper than the parser goes
]
GOOD_LINES = [
    '{"type": "status", "time": 1, "state": "running", "total_steps": 10}',
    '{"type": "step", "time": 3.0, "step": 3, "loss": 2.5, "total_steps": 10}',
    '{"type": "warning", "time": 5, "message": "bad [/x] markup \\u001b[31mred\\u001b[0m [bold]"}',
    '{"type": "compare", "time": 7, "examples": null, "exact_before": null}',
    '{"type": "checkpoint", "time": 8, "step": 3, "path": "a\\u0000b/[/x]", "removed": ["x"]}',
    '{"type": "params", "time": 8, "trainable": null}',
    '{"type": "eval", "time": 8.5, "step": 3, "loss": NaN}',
    '{"type": "status", "time": 9, "state": "failed", "message": "died [/bold] \\u001b]0;title\\u0007"}',
]


def hostile_run(root: Path, name: str = "a/1") -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    lines = [line for pair in zip(BAD_LINES, GOOD_LINES + [""] * len(BAD_LINES)) for line in pair if line]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return run_dir


def test_event_tail_keeps_valid_events_and_counts_the_rest(tmp_path: Path) -> None:
    run_dir = hostile_run(tmp_path)
    tail = EventTail(run_dir / "events.jsonl")
    events = tail.read()
    assert [e["type"] for e in events] == [json.loads(line)["type"] for line in GOOD_LINES]
    assert tail.skipped == len(BAD_LINES)
    assert tail.problems[0] == "events.jsonl:1: `config` must be an object (got [1, 2])"
    assert tail.problems[1].startswith("events.jsonl:3: `time` must be a finite number")
    assert any("`loss` must be a number" in p for p in tail.problems)
    assert any("not a JSON object (got list)" in p for p in tail.problems)
    assert any("no `type` field" in p for p in tail.problems)
    assert any(p.endswith("not JSON (RecursionError)") or "not JSON" in p for p in tail.problems[-1:])
    assert tail.read() == [] and tail.skipped == len(BAD_LINES)  # nothing new: nothing counted twice


def test_event_problem_names_the_field() -> None:
    assert event_problem({"type": "step", "loss": 1.5, "time": 3}) is None
    assert event_problem({"type": "step", "step": True}) == "`step` must be an integer (got true)"
    assert event_problem({"type": "x", "time": math.inf}) is not None
    assert event_problem({"type": "x", "time": None, "extra": [1]}) is None  # null allowed, other fields free


def test_state_of_a_hostile_run_folds_without_error(tmp_path: Path) -> None:
    state = read_state(hostile_run(tmp_path))
    assert state.state == "failed" and state.step == 3 and state.total_steps == 10
    assert state.exact_match == (0, 0, 0)
    assert state.skipped_count == len(BAD_LINES)
    assert all(ESC not in line.text and "\x00" not in line.text for line in state.log)


@pytest.mark.parametrize("plan", ['{"settings": [1], "memory": "x", "budget": "big", "spec": 3}',
                                  '{"settings": {"base_model": "m"}, "memory": {"total": "1"}, "key_settings": 5}',
                                  '{"settings": {"a"', "[1]", "null", "[" * 100_000],
                         ids=["wrong-types", "wrong-values", "truncated", "list", "null", "deep"])
def test_runs_and_plain_monitor_survive_hostile_events_and_plans(tmp_path: Path, plan: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = hostile_run(tmp_path / "runs")
    (run_dir / "plan.json").write_text(plan, encoding="utf-8")
    assert isinstance(read_plan(run_dir), dict)
    for argv in (["runs", str(tmp_path / "runs"), "--plain"], ["runs", str(run_dir)],
                 ["monitor", str(run_dir), "--plain"]):
        assert main(argv) == 0, argv
        out = capsys.readouterr().out
        assert ESC not in out and "\x00" not in out
    assert "bad [/x] markup \\x1b[31mred" in out  # shown as written, escaped
    assert f"{len(BAD_LINES)} line(s) that are" in out


def test_markup_in_run_paths_is_shown_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # no cell wraps
    run_dir = hostile_run(tmp_path / "runs", "[/x]/[bold]1")
    assert main(["runs", str(tmp_path / "runs"), "--plain"]) == 0
    assert "[/x]/[bold]1" in capsys.readouterr().out
    assert main(["monitor", str(run_dir), "--plain"]) == 0
    assert "[/x]" in capsys.readouterr().out


def test_monitor_app_opens_a_hostile_run(tmp_path: Path) -> None:
    from textual.widgets import RichLog

    from ftc.tui.app import make_app

    run_dir = hostile_run(tmp_path / "runs", "[/x]/\x1b[31m1")
    (run_dir / "plan.json").write_text('{"settings": [1], "memory": [2], "budget": "x"}', encoding="utf-8")
    app = make_app(run_dir)

    async def scenario() -> None:
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            log = app.screen.query_one("#log", RichLog)
            text = "\n".join(strip.text for strip in log.lines)
            assert "bad [/x] markup \\x1b[31mred" in text
            assert ESC not in str(app.screen.query_one("#status").render())

    asyncio.run(scenario())


def test_printable_escapes_control_characters_and_markup() -> None:
    assert printable("a\x1b[31mb\u202ec\x00") == "a\\x1b[31mb\\u202ec\\x00"
    assert printable("two\nlines\tok") == "two\nlines\tok"
    assert printable("two\nlines", line=True) == "two\\nlines"
    assert markup_safe("[/x] [bold]") == "\\[/x] \\[bold]"


def test_problem_lines_cannot_be_forged_by_a_key() -> None:
    problem = Problem("s.toml", 3, 'train."a\nspecs/x.toml:1: forged"', "unknown key \x1b[2J")
    assert str(problem).count("\n") == 0
    assert "\\n" in str(problem) and "\\x1b[2J" in str(problem)


def test_safe_console_prints_markup_and_escapes_as_text() -> None:
    from rich.table import Table

    console = SafeConsole(width=80, record=True, force_terminal=False)
    table = Table(title="title [/x]")
    table.add_column("[/y]")
    table.add_row("\x1b[31mred [bold]")
    console.print(table)
    console.print("a [/z] b")
    text = console.export_text()
    assert "title [/x]" in text and "[/y]" in text and "\\x1b[31mred [bold]" in text and "a [/z] b" in text


# ------------------------------------------------------------------------------------------ output folders

def test_output_folders_that_cannot_be_written_are_refused(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert output_dir_problem(afile) == "is a file, not a folder"
    assert output_dir_problem(afile / "sub" / "dir") == f"is under {afile}, which is a file"
    assert "symbolic link" in str(output_dir_problem(tmp_path / "dangling"))
    assert "symbolic link" in str(output_dir_problem(tmp_path / "dangling" / "x"))
    assert output_dir_problem(tmp_path / "new" / "folder") is None
    assert output_dir_problem(tmp_path) is None
    assert output_dir_problem("/proc/ftc-out") is not None  # read-only even for root
    assert not list(tmp_path.glob(".ftc-probe-*"))  # the probe leaves nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "permission denied" in str(output_dir_problem(locked / "out"))


@pytest.mark.parametrize("command", ["compile", "run", "data"])
def test_out_and_run_dir_name_the_path(tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    (tmp_path / "s.toml").write_text("name = 't'\n")
    flag = "--run-dir" if command == "run" else "--out"
    for where in ("file", "file/sub"):
        assert main([command, "s.toml", flag, where]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag} {where}: is ") and "internal error" not in err
    assert (tmp_path / "file").read_text() == "x"


# ------------------------------------------------------------------------------------------ merge / generate

@pytest.mark.parametrize("plan, says", [
    ("{", "plan.json: not valid JSON"), ("[]", "plan.json: must hold a JSON object (got list)"),
    ('{"settings": []}', "has no `settings` object"), ('{"settings": {"method": "nope"}}', "settings.method is 'nope'"),
    ('{"settings": {"method": "lora", "base_model": 3}}', "settings.base_model must be"),
    ('{"settings": {"method": "lora", "base_model": "m", "load_dtype": "int3"}}', "settings.load_dtype is 'int3'"),
    ('{"settings": {"method": "lora", "base_model": "m"}}', "adapter_config.json: not valid JSON"),
])
@pytest.mark.parametrize("command", ["merge", "generate"])
def test_merge_and_generate_refuse_a_damaged_run(tmp_path: Path, plan: str, says: str, command: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "runs" / "t" / "1"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "plan.json").write_text(plan)
    (run_dir / "final" / "adapter_config.json").write_text("{garbage")
    argv = ["merge", str(run_dir)] if command == "merge" else ["generate", str(run_dir), "--prompt", "hi"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert says in err and str(run_dir) in err and "internal error" not in err


def test_plan_and_compile_print_markup_in_paths_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "250")
    (tmp_path / "m[" / "x]").mkdir(parents=True)
    (tmp_path / "m[" / "x]" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "vocab_size": 100}))
    (tmp_path / "[" / "x]").mkdir(parents=True)
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    spec = tmp_path / "[" / "x]" / "s\x1b[31m.toml"
    spec.write_text('name = "t"\n[model]\nbase = "m[/x]"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
                    'validation = 0\n[method]\nkind = "lora"\n[hardware]\ndevice = "cpu"\n')
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "[/x]/s\\x1b[31m.toml" in out and ESC not in out
    assert main(["compile", str(spec), "--out", "out[/b]"]) == 0
    out = capsys.readouterr().out
    assert "-> out[/b]/" in out and ESC not in out


def test_runs_app_lists_a_hostile_run(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from ftc.tui.runs import RunsApp

    hostile_run(tmp_path / "[/x]runs", "[bold]/\x1b[31m1")
    app = RunsApp(tmp_path / "[/x]runs", sample_memory=False)

    async def scenario() -> None:
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            table = app.query_one(DataTable)
            assert table.row_count == 1
            assert str(table.get_row_at(0)[0]) == "[bold]/\\x1b[31m1"
            assert "[/x]runs/" in str(app.query_one("#runs-title").render())

    asyncio.run(scenario())


def test_merge_refuses_an_out_that_is_a_file_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "runs" / "t" / "1"
    (run_dir / "final").mkdir(parents=True)
    (run_dir / "plan.json").write_text('{"settings": {"method": "lora", "base_model": "m"}}')
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    (tmp_path / "file").write_text("x")
    assert main(["merge", str(run_dir), "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'}: is a file, not a folder" in capsys.readouterr().err
    (run_dir / "merged").write_text("x")  # the default folder
    assert main(["merge", str(run_dir)]) == 2
    assert f"--out {run_dir / 'merged'}: is a file" in capsys.readouterr().err


def test_run_refuses_a_runs_folder_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "vocab_size": 100}))
    (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "s.toml").write_text('name = "t"\n[model]\nbase = "m"\n[data]\nsource = "d.jsonl"\n'
                                     'format = "completion"\nvalidation = 0\n[method]\nkind = "lora"\n'
                                     '[hardware]\ndevice = "cpu"\n')
    (tmp_path / "runs").write_text("x")
    assert main(["run", "s.toml", "--no-tui"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run folder runs/t/") and "is under runs, which is a file" in err
    assert (tmp_path / "runs").read_text() == "x"
