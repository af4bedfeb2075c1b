"""`ftc init DATA`: the format and mapping guessed from names and content, a commented spec that
compiles (and trains), never over an existing file, questions only in a terminal."""

from __future__ import annotations

import csv
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import run_ftc, write_jsonl

from ftc.cli.main import main
from ftc.compiler.compile import compile_spec

REPO = Path(__file__).resolve().parent.parent
WORDS = "red green blue yellow black white cat dog".split()


def _init(tmp_path: Path, data: Path, *flags: str) -> dict[str, Any]:
    out = tmp_path / "spec.toml"
    assert main(["init", str(data), "--out", str(out), "--yes", *flags]) == 0
    compile_spec(out, tmp_path / "compiled")  # raises on any problem
    return tomllib.loads(out.read_text())


@pytest.mark.parametrize(("name", "fmt", "columns"), [
    ("alpaca_sample.jsonl", "instruction", {}),
    ("chat_sample.jsonl", "chat", {}),
    ("sharegpt_sample.jsonl", "chat", {"messages": "conversations"}),
    ("text_sample.jsonl", "text", {}),
    ("yoda.jsonl", "completion", {"prompt": "sentence", "completion": "yoda"}),
])
def test_example_data(name: str, fmt: str, columns: dict[str, str], tmp_path: Path) -> None:
    spec = _init(tmp_path, REPO / "specs" / "data" / name)
    assert spec["data"]["format"] == fmt and spec["data"].get("columns", {}) == columns
    assert spec["model"]["base"] == "smollm2-135m-instruct" and spec["method"]["kind"] == "lora"


def _pairs(a: str, b: str) -> list[dict[str, str]]:
    return [{a: f"say {w}", b: w.upper()} for w in WORDS]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_parquet(path: Path, rows: list[dict[str, str]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _write_saved(path: Path, rows: list[dict[str, str]]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


def _turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


UNUSUAL: list[tuple[str, Any, str, dict[str, str]]] = [  # (file, writer of rows, format, expected columns)
    ("qa.jsonl", lambda p: write_jsonl(p, _pairs("question", "answer")), "completion",
     {"prompt": "question", "completion": "answer"}),
    ("qr.csv", lambda p: _write_csv(p, _pairs("query", "response")), "completion",
     {"prompt": "query", "completion": "response"}),
    ("mt.parquet", lambda p: _write_parquet(p, _pairs("src", "tgt")), "completion",
     {"prompt": "src", "completion": "tgt"}),
    ("saved", lambda p: _write_saved(p, _pairs("q", "a")), "completion", {"prompt": "q", "completion": "a"}),
    ("caps.json", lambda p: p.write_text(json.dumps([{"Instruction": "shout", "Context": w, "Response": w.upper()}
                                                     for w in WORDS])), "instruction",
     {"instruction": "Instruction", "output": "Response", "input": "Context"}),
    ("notes.txt", lambda p: p.write_text("".join(f"the {w} cat sleeps\n" for w in WORDS)), "text", {}),
    ("stories.jsonl", lambda p: write_jsonl(p, [{"id": i, "story": f"a {w} story"} for i, w in enumerate(WORDS)]),
     "text", {"text": "story"}),
    ("oasst.jsonl", lambda p: write_jsonl(p, [{"conversation": _turns(("prompter", w), ("bot", w.upper()))}
                                              for w in WORDS]), "chat", {"messages": "conversation"}),
    ("pref.jsonl", lambda p: write_jsonl(p, [{"prompt": w, "chosen": w.upper(), "rejected": w} for w in WORDS]),
     "preference", {}),
    ("pref_chat.jsonl", lambda p: write_jsonl(p, [{"chosen": _turns(("user", w), ("assistant", w.upper())),
                                                   "rejected": _turns(("user", w), ("assistant", w))} for w in WORDS]),
     "chat", {"messages": "chosen"}),
]


@pytest.mark.parametrize(("name", "write", "fmt", "columns"), UNUSUAL, ids=[u[0] for u in UNUSUAL])
def test_unusual_data(name: str, write: Any, fmt: str, columns: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / name)
    spec = _init(tmp_path, tmp_path / name)
    assert spec["data"]["format"] == fmt and spec["data"].get("columns", {}) == columns
    if name == "oasst.jsonl":
        assert spec["data"]["roles"] == {"prompter": "user"}
    assert spec["train"].get("objective") == ("dpo" if name == "pref.jsonl" else None)
    assert spec["train"].get("objective") == ("dpo" if name == "pref.jsonl" else None)


def test_flags_choose_instead_of_the_guess(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _pairs("sentence", "yoda"))
    spec = _init(tmp_path, data, "--column", "prompt=yoda", "--column", "completion=sentence", "--method", "dora")
    assert spec["data"]["columns"] == {"prompt": "yoda", "completion": "sentence"}
    assert spec["method"]["kind"] == "dora"


def test_gpu_budget_falls_back_to_qlora(tmp_path: Path) -> None:
    spec = _init(tmp_path, REPO / "specs/data/alpaca_sample.jsonl", "--model", "meta-llama/Llama-2-13b-hf",
                 "--gpu", "RTX 4090")
    assert spec["method"]["kind"] == "qlora" and spec["hardware"]["gpu"] == "RTX 4090"
    text = (tmp_path / "spec.toml").read_text()
    assert "lora does not fit the memory budget; qlora is tried instead" in text


def test_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "spec.toml"
    out.write_text("# mine\n")
    data = str(REPO / "specs/data/yoda.jsonl")
    assert main(["init", data, "--out", str(out), "--yes"]) == 1
    assert out.read_text() == "# mine\n" and "exists" in capsys.readouterr().err
    assert main(["init", data, "--out", str(out), "--yes", "--force"]) == 0
    assert out.read_text().startswith("# Written by `ftc init")


@pytest.mark.parametrize(("content", "message"), [
    ("", "holds no rows"),
    ('{"id": 1, "score": 2.5}\n', "no text or conversation column found (columns: id, score)"),
    ("not json\n", "not valid JSON"),
])
def test_unusable_data_is_a_clear_error(content: str, message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.jsonl").write_text(content)
    assert main(["init", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "s.toml"), "--yes"]) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "s.toml").exists()


def test_unknown_roles_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", [{"messages": _turns(("narrator", w), ("assistant", w))} for w in WORDS])
    assert main(["init", str(data), "--out", str(tmp_path / "s.toml"), "--yes"]) == 2
    err = capsys.readouterr()
    assert "'narrator' are not known: map each in [data.roles]" in err.out
    assert "does not compile yet" in err.err and (tmp_path / "s.toml").exists()


def test_questions_in_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _pairs("sentence", "yoda"))
    answers = iter(["", "yoda", "sentence", "", "cpu", "rslora"])  # format, prompt, completion, model, gpu, method
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _prompt: next(answers))
    out = tmp_path / "s.toml"
    assert main(["init", str(data), "--out", str(out)]) == 0
    spec = tomllib.loads(out.read_text())
    assert spec["data"]["columns"] == {"prompt": "yoda", "completion": "sentence"}
    assert spec["method"]["kind"] == "rslora" and spec["hardware"]["device"] == "cpu"
    text = out.read_text()
    assert "prompt = column 'yoda' (as answered)" in text and "prompt = column 'sentence'" not in text
    assert "check the mapping" not in text


@pytest.mark.slow  # ~45 s on 2 shared cores: a real run of the emitted script
def test_init_spec_trains_on_the_tiny_model(tiny_model: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "qa.jsonl", _pairs("query", "response") * 4)
    done = run_ftc("init", "qa.jsonl", "--model", "tiny", "--out", "qa.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "prompt = column 'query'" in done.stdout and "tiny has a chat template" in done.stdout
    done = run_ftc("run", "qa.toml", "--run-dir", "runs/qa/r1", "--no-tui", "--set", "train.max_steps=3",
                   "--set", "train.batch_size=4", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (tmp_path / "runs/qa/r1/events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"][-1] == 3
    assert events[-1]["state"] == "completed"
    plan = json.loads((tmp_path / "runs/qa/r1/plan.json").read_text())
    assert plan["provenance"]["max_steps"] == "flag: --set train.max_steps=3"
