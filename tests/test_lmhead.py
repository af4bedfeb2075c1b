"""The kept-positions loss head (ftc.runtime.lmhead, chosen by compiler/plan/lmhead.py): it returns what TRL's
fused head returns, the planner picks it on CPU SFT only, with its reason in plan.md, and the emitted script
trains the losses the script with TRL's head trains."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

WORDS = "red green blue yellow black white cat dog bird fish horse cow".split()


def _pair() -> tuple:  # type: ignore[type-arg]
    """Two copies of one tiny random Llama with TRL's fused head; the second with ftc's head over it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from ftc.runtime.lmhead import score_kept_positions

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    trl = LlamaForCausalLM(config)
    kept = copy.deepcopy(trl)
    for model in (trl, kept):
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as SFTTrainer does
    score_kept_positions(kept)
    return trl, kept


def _forward_backward(model, **inputs):  # type: ignore[no-untyped-def]
    model.zero_grad()
    out = model(**inputs, fused_lm_head=True)
    out.loss.backward()
    return out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["padded", "padding-free", "nothing kept"])
def test_kept_positions_head_returns_what_trls_head_returns(layout: str) -> None:
    import torch

    trl, kept = _pair()
    ids = torch.randint(0, 300, (4, 20), generator=torch.Generator().manual_seed(1))
    labels = ids.clone()
    labels[:, :12] = -100  # the prompts: answer-only loss
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    if layout == "padding-free":  # one row, positions restarting per example (DataCollatorForLanguageModeling)
        inputs = {"input_ids": ids.reshape(1, -1), "labels": labels.reshape(1, -1),
                  "position_ids": torch.arange(20).repeat(4)[None]}
    if layout == "nothing kept":
        inputs["labels"] = torch.full_like(labels, -100)
    (want, want_grads), (got, got_grads) = _forward_backward(trl, **inputs), _forward_backward(kept, **inputs)
    assert torch.equal(got.label_mask, want.label_mask)
    assert torch.equal(got.is_top1, want.is_top1)
    for field in ("loss", "log_probs", "entropy"):
        assert torch.allclose(getattr(got, field), getattr(want, field), atol=1e-5), field
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name, grad in want_grads.items():
        assert torch.allclose(got_grads[name], grad, atol=1e-6), name
    if layout == "nothing kept":
        assert got.loss.item() == 0.0


def test_calls_without_the_fused_head_are_unchanged() -> None:
    import torch

    trl, kept = _pair()
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(2))
    assert torch.equal(kept(input_ids=ids).logits, trl(input_ids=ids).logits)
    assert torch.allclose(kept(input_ids=ids, labels=ids).loss, trl(input_ids=ids, labels=ids).loss)


def _spec(name: str, data: str, hardware: str = 'device = "cpu"', train: str = "") -> str:
    return (f'name = "{name}"\n[model]\nbase = "tiny"\n[data]\nsource = "{data}"\nformat = "completion"\n'
            'validation = 0\nmax_length = 64\n[data.columns]\nprompt = "q"\ncompletion = "a"\n'
            '[method]\nkind = "lora"\n[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 3e-3\n'
            f'logging_steps = 1\nwarmup = 0\nsave_steps = 100\n{train}[hardware]\n{hardware}\n')


@pytest.mark.parametrize(("hardware", "train", "kept", "why"), [
    ('device = "cpu"', "", True, "planned: on CPU TRL's fused head projects every position"),
    ('device = "cuda"\ngpu = "A100 80GB"', "", False, "planned: TRL's fused head, which with Triton"),
])
def test_the_planner_chooses_the_head_by_device(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                hardware: str, train: str, kept: bool, why: str) -> None:
    from ftc.compiler import compile_spec

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"say {w}", "a": w.upper()} for w in WORDS])
    (tmp_path / "s.toml").write_text(_spec("s", "d.jsonl", hardware, train))
    monkeypatch.chdir(tmp_path)
    result = compile_spec(tmp_path / "s.toml")
    head = result.plan.hardware.lm_head
    assert head.value == ("kept-positions" if kept else "trainer") and head.why.startswith(why), head
    script, plan_md = result.emitted.files["train.py"], result.emitted.files["plan.md"]
    assert ("score_kept_positions(model)" in script) is kept
    assert ("LM_HEAD = 'kept-positions'" in script) is kept
    assert ("- loss head: kept positions only (on CPU" in plan_md) is kept


def test_other_trainers_and_logit_transforms_keep_trls_head() -> None:
    from ftc.compiler.plan.lmhead import lm_head_choice

    assert lm_head_choice("cpu", "dpo", "sft", "single", {}).value == "trainer"
    assert lm_head_choice("cpu", "sft", "hf", "single", {}).value == "trainer"
    assert lm_head_choice("cpu", "sft", "sft", "zero3", {}).value == "trainer"
    gemma = lm_head_choice("cpu", "sft", "sft", "single", {"final_logit_softcapping": 30.0})
    assert gemma.value == "trainer" and "final_logit_softcapping" in gemma.why
    assert lm_head_choice("cpu", "sft", "sft", "ddp", {"final_logit_softcapping": None}).value == "kept-positions"


def _losses(run_dir: Path) -> list[float]:
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e["loss"] for e in events if e["type"] == "step"]


def test_kept_positions_head_trains_the_losses_of_trls_head(tiny_model: Path, tmp_path: Path) -> None:
    """The emitted script (kept-positions head, as planned on CPU) and the same script with its one call removed
    (TRL's fused head, the script before issue 19): the same loss at every step, with LoRA dropout on."""
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"please say the word {w} now", "a": f"{w.upper()} it is"}
                                       for w in WORDS * 2])
    (tmp_path / "s.toml").write_text(_spec("s", "d.jsonl"))
    done = run_ftc("run", "s.toml", "--run-dir", "runs/kept", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    script = (tmp_path / "runs/kept/train.py").read_text()
    assert "score_kept_positions(model)" in script
    trl_script = tmp_path / "trl_train.py"
    trl_script.write_text("".join(line for line in script.splitlines(keepends=True)
                                  if "score_kept_positions(model)" not in line))
    ran = subprocess.run([sys.executable, str(trl_script), str(tmp_path / "runs/trl")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    kept, trl = _losses(tmp_path / "runs/kept"), _losses(tmp_path / "runs/trl")
    assert len(kept) == len(trl) == 8
    assert kept == pytest.approx(trl, rel=1e-4), (kept, trl)
    assert kept[-1] < kept[0]  # and it learns
