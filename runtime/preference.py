"""Held-out preference accuracy around a preference run: the share of validation pairs whose chosen answer the
model finds more likely than the rejected one (summed log-probability of the answer's tokens given the prompt),
before and after training, with a few greedy answers before and after. Written to RUN_DIR/eval.json and a
`metrics` event. TRL's own rewards/accuracies compare with the reference, so they are 0 before training;
this one is the model's own preference, about 50 % for a base that has none."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftc.core.events import EventLog

SHOWN = 5  # held-out prompts answered before and after


def _answer_logprob(model: Any, prompt_ids: list[int], answer_ids: list[int]) -> float:
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + answer_ids], device=device)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, len(prompt_ids) - 1:-1]
    picked = torch.log_softmax(logits.float(), dim=-1).gather(1, ids[0, len(prompt_ids):, None])
    return float(picked.sum())


def preference_accuracy(model: Any, tokenizer: Any, pairs: list[Any]) -> dict[str, Any]:
    """{"accuracy", "pairs", "answers"}: chosen more likely than rejected, on pairs with both (None without)."""
    import torch

    from ftc.runtime.trainer import generate_answers

    was_training = model.training
    model.eval()
    wins = 0
    paired = [p for p in pairs if "chosen" in p.answers and "rejected" in p.answers]
    try:
        with torch.no_grad():
            for p in paired:
                t = p.tokens
                wins += _answer_logprob(model, t["prompt_ids"], t["chosen_ids"]) > \
                    _answer_logprob(model, t["prompt_ids"], t["rejected_ids"])
    finally:
        if was_training:
            model.train()
    shown = [p.messages + [{"role": "assistant", "content": ""}] for p in pairs[:SHOWN]]
    return {"accuracy": wins / len(paired) if paired else None, "pairs": len(paired),
            "answers": generate_answers(model, tokenizer, shown, 48) if shown else []}


def report_preference_accuracy(before: dict[str, Any], after: dict[str, Any], events: EventLog,
                               run_dir: str | Path, pairs: list[Any] | None = None) -> dict[str, Any]:
    """Print and record the accuracy before and after, and the answers side by side (eval.json, `metrics`)."""
    prompts = [p.messages[-1]["content"] for p in (pairs or [])][:SHOWN]
    answers = [{"prompt": q, "before": b, "after": a} for q, b, a in zip(prompts, before["answers"], after["answers"])]
    for item in answers:
        print(f"prompt: {item['prompt']}\n  before: {item['before']}\n  after:  {item['after']}", flush=True)
    result = {"split": "validation", "metrics": ["preference_accuracy"], "pairs": after["pairs"],
              "before": {"preference_accuracy": before["accuracy"]}, "after": {"preference_accuracy": after["accuracy"]},
              "answers": answers, "main": "preference_accuracy"}
    path = Path(run_dir) / "eval.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if before["accuracy"] is None:
        return result
    message = (f"held-out preference accuracy (chosen more likely than rejected) on {after['pairs']} pairs: "
               f"{100 * before['accuracy']:.0f} % -> {100 * after['accuracy']:.0f} %")
    print(message, flush=True)
    events.write("metrics", message, before=result["before"], after=result["after"], examples=after["pairs"],
                 path=str(path), regressions=[], main="preference_accuracy")
    return result
