"""[eval] metrics: the scores themselves, the spec's checks, and a real run of the tiny model that writes
eval.json, the metrics event and the report, then `ftc eval` on the finished run and the regression gate."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

from ftc.runtime.evaluate import score, table_rows, worse

WORDS = "red green blue yellow black white cat dog".split()
ROWS = [{"prompt": f"translate {w}", "completion": w.upper()} for w in WORDS]
ALL = '["loss", "perplexity", "exact_match", "accuracy", "bleu", "chrf", "rouge"]'


def test_scores_of_known_answers() -> None:
    refs = ["the cat sat on the mat", "Positive", "a b c d"]
    same = score(["exact_match", "accuracy", "bleu", "chrf", "rouge"], refs, refs)
    assert same["exact_match"] == same["accuracy"] == 100
    assert same["bleu"] == pytest.approx(100) and same["chrf"] == pytest.approx(100)
    assert same["rouge1"] == same["rougeL"] == pytest.approx(100)
    assert same["rouge2"] == pytest.approx(200 / 3)  # a one-word answer has no bigram to share
    answers = ["the cat sat on a mat", "positive.\nbecause it is nice", "x y z w"]
    got = score(["exact_match", "accuracy", "bleu", "rouge"], answers, refs)
    assert got["exact_match"] == 0
    assert got["accuracy"] == pytest.approx(100 / 3)  # "positive." on its first line is the label
    assert 0 < got["bleu"] < 100
    # ROUGE-1 F1 (lower case words): 5 of 6 words shared (5/6); 1 word of 1 in an answer of 5 (P 1/5, R 1: F1 1/3); 0
    assert got["rouge1"] == pytest.approx(100 * (5 / 6 + 1 / 3 + 0) / 3)


def test_worse_knows_the_direction_of_each_metric() -> None:
    assert worse("loss", 1.0, 1.1) and not worse("loss", 1.0, 0.9)
    assert worse("perplexity", 2.0, 3.0) and worse("bleu", 20.0, 10.0) and not worse("exact_match", 10.0, 10.0)
    assert table_rows({"loss": 2.0}, {"loss": 1.5, "bleu": 3.0}) == [("loss", "2", "1.5", "-0.5"),
                                                                        ("BLEU", "-", "3", "")]


def _spec(tmp_path: Path, eval_lines: str, *, data: str = 'validation = 0.25', lr: float = 5e-2,
          steps: int = 16) -> Path:
    spec = tmp_path / "e.toml"
    spec.write_text(f'name = "e"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n{data}\n'
                    f'max_length = 32\n[method]\nkind = "lora"\nr = 16\nalpha = 32\n[train]\nmax_steps = {steps}\n'
                    f'batch_size = 4\nlearning_rate = {lr}\nlogging_steps = 1\nwarmup = 0\n[hardware]\ndevice = "cpu"\n'
                    f'[eval]\n{eval_lines}\n')
    return spec


@pytest.mark.parametrize(("lines", "expected"), [
    (f"metrics = {ALL}", "compare = 0"),
    ('compare = 2\nfail_if_worse = ["bleu"]', "bleu is not measured"),
    ('compare = 2\nmetrics = ["loss", "loss"]', "lists a name twice"),
])
def test_spec_checks(lines: str, expected: str, tmp_path: Path, tiny_model: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    _spec(tmp_path, lines)
    done = run_ftc("compile", "e.toml", cwd=tmp_path)
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_missing_metric_package_names_the_extra(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    from ftc.compiler import evalchecks
    from ftc.compiler.compile import compile_spec
    from ftc.core.errors import SpecError

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    _spec(tmp_path, 'compare = 2\nmetrics = ["rouge"]')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evalchecks, "installed", lambda package: package != "rouge_score")  # as without the extra
    with pytest.raises(SpecError) as caught:
        compile_spec("e.toml")
    assert "pip install 'ftc[metrics]'" in str(caught.value) and "eval.metrics" in str(caught.value)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A run of the tiny model with every metric, before and after."""
    tmp_path = tmp_path_factory.mktemp("eval-run")
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    _spec(tmp_path, f"compare = 4\nmax_new_tokens = 4\nmetrics = {ALL}\nfail_if_worse = [\"loss\"]")
    done = run_ftc("run", "e.toml", "--run-dir", "runs/e", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validation metrics: base vs fine-tuned" in done.stdout
    return tmp_path / "runs" / "e"


def test_run_writes_eval_json_and_event(finished: Path) -> None:
    result = json.loads((finished / "eval.json").read_text())
    expected = {"loss", "perplexity", "exact_match", "accuracy", "bleu", "chrf", "rouge1", "rouge2", "rougeL"}
    assert set(result["before"]) == set(result["after"]) == expected
    assert result["after"]["loss"] < result["before"]["loss"]  # the memorisable rows were learned
    assert result["after"]["perplexity"] == pytest.approx(math.exp(result["after"]["loss"]))
    assert result["generation"] == {"examples": 2, "max_new_tokens": 4,  # 2 of the 8 distinct rows held out
                                    "decoding": "greedy", "do_sample": False,
                                    "prompt": "chat template with the generation prompt"}
    assert result["gate"] == {"fail_if_worse": ["loss"], "regressions": []}
    events = [json.loads(line) for line in (finished / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in events if e["type"] == "metrics"]
    assert len(metrics) == 1 and metrics[0]["after"] == result["after"]
    compare = next(e for e in events if e["type"] == "compare")  # the answers side by side, as before
    assert 100 * compare["exact_after"] / compare["examples"] == result["after"]["exact_match"]
    assert (finished / "report.html").is_file()  # written by ftc run at the end


def test_ftc_eval_remeasures_the_run_and_its_base(finished: Path) -> None:
    result = json.loads((finished / "eval.json").read_text())
    cwd = finished.parent.parent
    for flag, side in (([], "after"), (["--base"], "before")):
        done = run_ftc("eval", "runs/e", "--json", *flag, cwd=cwd)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        # the same examples and the same code as in train.py: the same numbers (a fresh LoRA adapter is the base)
        for name in ("loss", "exact_match", "bleu", "rougeL"):
            assert got["metrics"][name] == pytest.approx(result[side][name], rel=1e-4, abs=1e-4), (flag, name)
    table = run_ftc("eval", "runs/e", "--metrics", "loss,perplexity", cwd=cwd)
    assert table.returncode == 0 and "perplexity" in table.stdout and "tuned (after)" in table.stdout, table.stderr


def test_ftc_eval_on_a_file(finished: Path) -> None:
    cwd = finished.parent.parent
    write_jsonl(cwd / "other.jsonl", [{"prompt": "translate cow", "completion": "COW"}] * 3)
    done = run_ftc("eval", "runs/e", "--data", "other.jsonl", "--json", "--metrics", "loss,exact_match", cwd=cwd)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["examples"] == 1 and len(got["answers"]) == 1  # duplicates dropped as in training
    bad = run_ftc("eval", "runs/e", "--data", "missing.jsonl", cwd=cwd)
    assert bad.returncode == 1 and "--data missing.jsonl" in bad.stderr


def _teach(model_dir: Path, rows: list[dict[str, str]], steps: int = 60) -> None:
    """Train the tiny model in place on `rows` (chat-formatted), so that it starts out good at them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                            {"role": "assistant", "content": r["completion"]}], tokenize=False)
             for r in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(model_dir)


def test_regression_gate_fails_the_run_and_keeps_the_result(tmp_path: Path, tiny_model: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "tiny")
    # the base first learns the validation answers; fine-tuning on other answers then makes it forget them, so
    # the validation loss gets worse than the base's: a real regression
    sentences = ["the quick brown fox jumps over the lazy dog", "one two three four five six seven eight nine ten"]
    held = [{"prompt": f"say {i}", "completion": s} for i, s in enumerate(sentences)]
    _teach(tmp_path / "tiny", held)
    write_jsonl(tmp_path / "d.jsonl", ROWS * 4)
    write_jsonl(tmp_path / "v.jsonl", held)
    _spec(tmp_path, 'metrics = ["loss"]\nfail_if_worse = ["loss"]', data='validation = "v.jsonl"', lr=1e-1)
    done = run_ftc("run", "e.toml", "--run-dir", "runs/e", "--no-tui", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "regression gate (eval.fail_if_worse): loss got worse" in done.stderr
    assert "Traceback" not in done.stderr
    run = tmp_path / "runs" / "e"
    assert (run / "final" / "adapter_config.json").is_file()  # the trained result is kept
    result = json.loads((run / "eval.json").read_text())
    assert result["gate"]["regressions"] == ["loss"] and result["after"]["loss"] > result["before"]["loss"]
    status = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()][-1]
    assert status["state"] == "failed" and status["error"] == "eval_gate"
    assert (run / "report.html").is_file()  # the report shows the regression too


def test_monitor_state_and_runs_table_show_the_main_metric(tmp_path: Path) -> None:
    from rich.console import Console

    from ftc.core.events import EventLog
    from ftc.core.metrics import main_metric
    from ftc.tui.state import read_state
    from ftc.tui.summary import run_summary, runs_table
    from ftc.tui.widgets import status_text

    assert main_metric(["loss", "bleu", "rouge"], []) == "bleu"
    assert main_metric(["loss", "rouge"], ["rouge"]) == "rougeL"
    assert main_metric(["loss", "perplexity"], []) == "loss"
    run = tmp_path / "runs" / "a"
    events = EventLog(run / "events.jsonl")
    events.write("status", state="running", total_steps=4)
    events.write("metrics", "metrics", before={"loss": 3.5, "bleu": 4.0}, after={"loss": 1.25, "bleu": 41.5},
                 main="bleu")
    events.write("status", "done", state="completed", step=4)
    state = read_state(run)
    assert state.main_metric == "bleu" and state.metrics_after == {"loss": 1.25, "bleu": 41.5}
    console = Console(width=200, record=True)
    console.print(runs_table(tmp_path / "runs", [(run, state)]))
    console.print(run_summary(run))
    console.print(status_text(state, {}, "a", now=None, alive=None))
    shown = console.export_text()
    assert "main metric" in shown and "BLEU 4 -> 41.5" in shown
    assert "eval loss" in shown and "3.5 -> 1.25" in shown
