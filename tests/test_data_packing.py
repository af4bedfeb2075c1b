"""Packing: several examples in one row, padding-free, must train exactly what they train apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings, run_ftc, write_jsonl

from ftc.core.data.stage import prepare_data


def test_packed_examples_attend_only_to_themselves(tiny_model: Path, tiny_tokenizer: Any) -> None:
    """TRL's padding-free collator (what packing = true uses) on the tiny Llama: the packed loss equals
    the token-weighted mean of the examples' own losses, and their logits are unchanged (so the
    position_ids reset per example really are attention boundaries; the trainer passes
    use_cache=False, without which transformers would not look for them)."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two"},
                          {"role": "assistant", "content": "three"}, {"role": "user", "content": "four"},
                          {"role": "assistant", "content": "five six"}]},
            {"messages": [{"role": "user", "content": "red"}, {"role": "assistant", "content": "green blue"}]}]
    items = prepare_data(rows, tiny_tokenizer, data_settings("chat", 128)).train
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    collator = DataCollatorForLanguageModeling(pad_token_id=tiny_tokenizer.pad_token_id, padding_free=True)
    examples = [{"input_ids": e.encoding["input_ids"], "labels": e.encoding["labels"]} for e in items]
    packed = collator(examples)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        together = model(**packed, use_cache=False)
        apart = [model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]]), use_cache=False)
                 for e in examples]
    counts = [sum(1 for label in e["labels"][1:] if label != -100) for e in examples]  # shifted targets
    expected = sum(out.loss * n for out, n in zip(apart, counts)) / sum(counts)
    assert together.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    first = len(examples[0]["input_ids"])
    assert torch.allclose(together.logits[0, first:], apart[1].logits[0], atol=1e-4)


WORDS = "red green blue yellow black white cat dog bird fish horse cow".split()


@pytest.mark.slow
def test_packing_trains_to_the_same_loss(tiny_model: Path, tmp_path: Path) -> None:
    """The same memorisable set trained with and without packing ends at the same (low) loss."""
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"translate {w}", "a": w.upper()} for w in WORDS])
    losses = {}
    for packing in ("false", "true"):
        spec = (f'name = "p{packing}"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
                f'validation = 0\nmax_length = 64\npacking = {packing}\n[data.columns]\nprompt = "q"\ncompletion = "a"\n'
                '[method]\nkind = "full"\n[train]\nmax_steps = 120\nbatch_size = 2\nlearning_rate = 5e-3\n'
                'logging_steps = 10\nwarmup = 0\n[hardware]\ndevice = "cpu"\n')
        (tmp_path / "s.toml").write_text(spec)
        done = run_ftc("run", "s.toml", "--run-dir", f"runs/{packing}", "--no-tui", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        events = [json.loads(line) for line in (tmp_path / f"runs/{packing}/events.jsonl").read_text().splitlines()]
        losses[packing] = [e["loss"] for e in events if e["type"] == "step"]
    assert losses["true"][-1] < 0.05 and losses["false"][-1] < 0.05, losses  # both memorised the set


def test_padding_free_batches_train(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """padding_free = true without packing: TRL's padding-free collator over examples truncated by the data
    stage (train.py passes max_length=None, which TRL requires); the loss falls and ftc data counts the saving."""
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"translate {w} " + "please " * (i % 4), "a": w.upper()}
                                       for i, w in enumerate(WORDS)])
    spec = ('name = "pf"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nvalidation = 0\n'
            'max_length = 64\npadding_free = true\n[data.columns]\nprompt = "q"\ncompletion = "a"\n[method]\n'
            'kind = "full"\n[train]\nmax_steps = 20\nbatch_size = 4\nlearning_rate = 3e-3\nlogging_steps = 1\n'
            'warmup = 0\n[hardware]\ndevice = "cpu"\n')
    (tmp_path / "s.toml").write_text(spec)
    from ftc.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["data", "s.toml", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["padding_free"]["padded_tokens_saved"] == stats["padding"]["padded_tokens"] > 0
    done = run_ftc("run", "s.toml", "--run-dir", "r", "--no-tui", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "padding_free=PADDING_FREE" in (tmp_path / "r" / "train.py").read_text()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "r/events.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "step"]
    assert losses[-1] < 0.5 * losses[0], losses
