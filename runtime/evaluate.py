"""`[eval] metrics`: the model measured on the validation split, before training (the base) and after (the tuned
model). train.py and `ftc eval` call `evaluate` for each model, then `report_evaluation` writes RUN_DIR/eval.json and
a `metrics` event, prints the before/after table and applies the regression gate (`[eval] fail_if_worse`).

Scores, all computed here on the same examples for both models:
  loss, perplexity   mean cross-entropy per trained (label) token over every validation example, and its exp
  exact_match        % of answers equal to the reference (surrounding whitespace ignored)
  accuracy           % whose first line matches the reference's first line, case and punctuation ignored
                     (for label-like answers: "Positive." counts as "positive")
  bleu, chrf         sacrebleu's corpus BLEU and chrF (0-100), imported only when asked for
  rouge1/2/L         rouge-score's mean F1 x 100 (stemmed), imported only when `rouge` is asked for
Answers are generated greedily (no sampling) from the chat template's generation prompt, up to max_new_tokens.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

from ftc.core.events import EventLog
from ftc.core.metrics import GENERATED, LABELS, main_metric, scores_of, worse

__all__ = ["GENERATED", "LABELS", "RegressionGate", "evaluate", "mean_loss", "report_evaluation", "score",
           "table_rows", "worse"]


class RegressionGate(Exception):
    """A metric in `[eval] fail_if_worse` got worse than the base: the run fails (final/ is kept)."""


def mean_loss(model: Any, dataset: Any, pad_token_id: int, batch_size: int = 8) -> float:
    """Cross-entropy per trained token over `dataset` (rows of input_ids and labels, -100 = not trained)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, tokens = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start:start + batch_size]
            width = max(len(ids) for ids in rows["input_ids"])
            ids = torch.full((len(rows["input_ids"]), width), pad_token_id, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            mask = torch.zeros_like(ids)
            for i, (row_ids, row_labels) in enumerate(zip(rows["input_ids"], rows["labels"])):
                ids[i, :len(row_ids)], labels[i, :len(row_labels)], mask[i, :len(row_ids)] = (
                    torch.tensor(row_ids), torch.tensor(row_labels), 1)
            counted = int((labels[:, 1:] != -100).sum())  # the model shifts labels by one
            if not counted:
                continue
            with torch.no_grad():
                out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
            total += float(out.loss) * counted
            tokens += counted
    finally:
        if was_training:
            model.train()
    return total / tokens if tokens else float("nan")


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.casefold().strip(string.punctuation + string.whitespace)


def score(metrics: list[str], answers: list[str], references: list[str]) -> dict[str, float]:
    """The generated-answer metrics among `metrics`, on 0-100 scales."""
    n = len(references)
    out: dict[str, float] = {}
    if not n:
        return out
    if "exact_match" in metrics:
        out["exact_match"] = 100 * sum(a.strip() == r.strip() for a, r in zip(answers, references)) / n
    if "accuracy" in metrics:
        out["accuracy"] = 100 * sum(_first_line(a) == _first_line(r) for a, r in zip(answers, references)) / n
    if "bleu" in metrics or "chrf" in metrics:
        import sacrebleu

        if "bleu" in metrics:
            out["bleu"] = float(sacrebleu.corpus_bleu(answers, [references]).score)
        if "chrf" in metrics:
            out["chrf"] = float(sacrebleu.corpus_chrf(answers, [references]).score)
    if "rouge" in metrics:
        from rouge_score import rouge_scorer

        kinds = ["rouge1", "rouge2", "rougeL"]
        scorer = rouge_scorer.RougeScorer(kinds, use_stemmer=True)
        scored = [scorer.score(r, a) for a, r in zip(answers, references)]
        for kind in kinds:
            out[kind] = 100 * sum(s[kind].fmeasure for s in scored) / n
    return out


def evaluate(model: Any, tokenizer: Any, metrics: list[str], dataset: Any, conversations: list[list[dict[str, str]]],
             max_new_tokens: int) -> dict[str, Any]:
    """{"metrics": {name: value}, "answers": [...]} for one model: loss/perplexity on `dataset`, the others on the
    greedy answers to `conversations` (compared with each one's final assistant turn)."""
    from ftc.runtime.trainer import generate_answers

    values: dict[str, float] = {}
    if dataset is not None and ("loss" in metrics or "perplexity" in metrics):
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        loss = mean_loss(model, dataset, pad)
        if "loss" in metrics:
            values["loss"] = loss
        if "perplexity" in metrics:
            values["perplexity"] = math.exp(loss) if loss < 700 else float("inf")
    answers: list[str] = []
    if conversations and any(m in GENERATED for m in metrics):
        answers = generate_answers(model, tokenizer, conversations, max_new_tokens)
        values.update(score(metrics, answers, [m[-1]["content"].strip() for m in conversations]))
    return {"metrics": values, "answers": answers}


def table_rows(before: dict[str, float] | None, after: dict[str, float] | None) -> list[tuple[str, str, str, str]]:
    """(metric, before, after, change) for printing; a side not measured shows '-'."""
    names = list(dict.fromkeys([*(before or {}), *(after or {})]))
    rows = []
    for name in names:
        b, a = (before or {}).get(name), (after or {}).get(name)
        change = f"{a - b:+.4g}" if a is not None and b is not None else ""
        rows.append((LABELS.get(name, name), "-" if b is None else f"{b:.4g}", "-" if a is None else f"{a:.4g}",
                     change))
    return rows


def print_table(before: dict[str, float] | None, after: dict[str, float] | None, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "base (before)", "tuned (after)", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in table_rows(before, after):
        table.add_row(*row)
    Console(width=120).print(table)


def report_evaluation(metrics: list[str], conversations: list[list[dict[str, str]]], before: dict[str, Any],
                      after: dict[str, Any], events: EventLog, run_dir: str | Path, *, max_new_tokens: int,
                      examples: int, fail_if_worse: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Write eval.json and the `metrics` event, print the tables; raise RegressionGate when a gated metric is worse."""
    from ftc.runtime.trainer import compare_answers

    if before["answers"] and after["answers"]:
        compare_answers(conversations, before["answers"], after["answers"], events)  # answers side by side
    generation = {"examples": len(conversations), "max_new_tokens": max_new_tokens, "decoding": "greedy",
                  "do_sample": False, "prompt": "chat template with the generation prompt"}
    result = {"split": "validation", "loss_examples": examples, "metrics": metrics, "generation": generation,
              "before": before["metrics"], "after": after["metrics"]}
    gated = [m for name in fail_if_worse for m in scores_of(name)]
    regressions = [m for m in gated if m in before["metrics"] and m in after["metrics"]
                   and worse(m, before["metrics"][m], after["metrics"][m])]
    result["gate"] = {"fail_if_worse": list(fail_if_worse), "regressions": regressions}
    result["main"] = main = main_metric(metrics, list(fail_if_worse))
    path = Path(run_dir) / "eval.json"
    path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_table(before["metrics"], after["metrics"], "validation metrics: base vs fine-tuned")
    message = "metrics: " + ", ".join(f"{LABELS.get(k, k)} {before['metrics'].get(k, float('nan')):.4g} -> {v:.4g}"
                                      for k, v in after["metrics"].items())
    events.write("metrics", message, before=before["metrics"], after=after["metrics"], generation=generation,
                 examples=examples, path=str(path), regressions=regressions, main=main)
    if regressions:
        raise RegressionGate("regression gate (eval.fail_if_worse): " + ", ".join(
            f"{LABELS.get(m, m)} got worse, {before['metrics'][m]:.4g} -> {after['metrics'][m]:.4g}"
            for m in regressions) + f"; the tuned model is kept in {Path(run_dir) / 'final'}, the scores in {path}")
    return result
