"""The planner's padding-free choice (compiler/plan/speed.py): chosen from the measured length spread,
with its reason in plan.md, and it trains what the padded script trains (the same losses)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

from ftc.compiler.plan.speed import expected_longest, step_costs

WORDS = "red green blue yellow black white cat dog bird fish horse cow".split()


def test_expected_longest_is_the_mean_maximum() -> None:
    # two draws from (1, 2): the longest is 1 only when both are 1 (1/4)
    assert expected_longest((1, 2), 2) == pytest.approx(1 * 0.25 + 2 * 0.75)
    assert expected_longest((5, 5, 5), 8) == pytest.approx(5)
    assert expected_longest((1, 2, 3, 100), 1) == pytest.approx(26.5)  # one draw: the mean


def test_padding_free_costs_its_attention_square() -> None:
    padded, free = step_costs((10,) * 8, 8, params=1000, layers=1, hidden=1)
    assert free > padded  # no padding to save, and one row attends over 80 positions instead of 10
    padded, free = step_costs((10,) * 7 + (200,), 8, params=10**8, layers=30, hidden=576)
    assert free < 0.5 * padded
    # FlashAttention-2's varlen kernel attends within each example: equal lengths then cost what padding does
    padded, free = step_costs((10,) * 8, 8, params=1000, layers=1, hidden=1, varlen=True)
    assert free == pytest.approx(padded)


def _spec(name: str, data: str, extra: str = "", method: str = 'kind = "lora"\ndropout = 0.0') -> str:
    return (f'name = "{name}"\n[model]\nbase = "tiny"\n[data]\nsource = "{data}"\nformat = "completion"\n'
            f'validation = 0\nmax_length = 128\n{extra}[data.columns]\nprompt = "q"\ncompletion = "a"\n'
            f'[method]\n{method}\n[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 3e-3\nlogging_steps = 1\n'
            'warmup = 0\nsave_steps = 100\n[hardware]\ndevice = "cpu"\n')


def _write_data(tmp_path: Path) -> None:
    # a few long rows among short ones: micro-batches of 4 pad most of their positions
    write_jsonl(tmp_path / "spread.jsonl", [{"q": f"say {w}" + (" again" * 12 if i % 4 == 0 else ""),
                                             "a": w.upper()} for i, w in enumerate(WORDS * 2)])
    write_jsonl(tmp_path / "even.jsonl", [{"q": f"say {w}", "a": w.upper()} for w in WORDS * 2])


@pytest.mark.parametrize(("data", "extra", "method", "on", "why"), [
    ("spread", "", 'kind = "lora"', True, "planned: measured: micro-batches of 4 would be"),
    ("even", "", 'kind = "lora"', False, "planned: measured: micro-batches of 4 would be"),
    ("spread", "padding_free = false\n", 'kind = "lora"', False, "spec: data.padding_free"),
    ("spread", "packing = true\n", 'kind = "lora"', False, "derived: packed rows are padding-free already"),
    ("spread", "", 'kind = "prompt"', False, "derived: this method's virtual tokens need padded rows"),
])
def test_padding_free_is_planned_from_the_length_spread(tiny_model: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, data: str, extra: str,
                                                        method: str, on: bool, why: str) -> None:
    from ftc.compiler import compile_spec

    shutil.copytree(tiny_model, tmp_path / "tiny")
    _write_data(tmp_path)
    (tmp_path / "s.toml").write_text(_spec("s", f"{data}.jsonl", extra, method))
    monkeypatch.chdir(tmp_path)
    result = compile_spec(tmp_path / "s.toml")
    choice = result.plan.data.padding_free
    assert choice.value is on and choice.why.startswith(why), choice
    plan_md = result.emitted.files["plan.md"]
    assert f"- padding-free: {'on' if on else 'off'} (" in plan_md
    assert ("padding_free=PADDING_FREE" in result.emitted.files["train.py"]) is on


def test_planned_padding_free_trains_the_padded_losses(tiny_model: Path, tmp_path: Path) -> None:
    """The same spec with the planner's padding-free rows and with padding forced: same rows per step,
    same loss at every step (float noise only; LoRA dropout 0 so no random mask depends on the shapes)."""
    shutil.copytree(tiny_model, tmp_path / "tiny")
    _write_data(tmp_path)
    losses = {}
    for name, extra in (("planned", ""), ("padded", "padding_free = false\n")):
        (tmp_path / f"{name}.toml").write_text(_spec(name, "spread.jsonl", extra, 'kind = "lora"\ndropout = 0.0'))
        done = run_ftc("run", f"{name}.toml", "--run-dir", f"runs/{name}", "--no-tui", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        events = [json.loads(line) for line in (tmp_path / f"runs/{name}/events.jsonl").read_text().splitlines()]
        losses[name] = [e["loss"] for e in events if e["type"] == "step"]
    assert "padding_free=PADDING_FREE" in (tmp_path / "runs/planned/train.py").read_text()
    assert len(losses["planned"]) == len(losses["padded"]) == 8
    assert losses["planned"] == pytest.approx(losses["padded"], rel=1e-3), losses
    assert losses["planned"][-1] < losses["planned"][0]  # and it learns
