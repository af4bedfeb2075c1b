"""Names of the `[eval] metrics` scores, shared by the runtime that computes them (ftc.runtime.evaluate), the report
and the monitor: their labels, which way is better, and the run's main metric (the one `ftc runs` shows)."""

from __future__ import annotations

from typing import Any

LABELS = {"loss": "loss", "perplexity": "perplexity", "exact_match": "exact match %", "accuracy": "accuracy %",
          "bleu": "BLEU", "chrf": "chrF", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L"}
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})
GENERATED = ("exact_match", "accuracy", "bleu", "chrf", "rouge")
"""Metrics of generated answers; `rouge` is scored as rouge1, rouge2 and rougeL."""


def scores_of(metric: str) -> list[str]:
    """The score names a metric writes (rouge: three)."""
    return ["rouge1", "rouge2", "rougeL"] if metric == "rouge" else [metric]


def main_metric(metrics: list[str], fail_if_worse: list[str]) -> str | None:
    """The score that sums a run up: the first gated metric, else the first metric of generated answers, else the
    first one listed (rouge: ROUGE-L)."""
    chosen = next(iter(fail_if_worse), None) or next((m for m in metrics if m in GENERATED), None) \
        or next(iter(metrics), None)
    return None if chosen is None else scores_of(chosen)[-1]


def worse(name: str, before: float, after: float) -> bool:
    return after > before if name in LOWER_IS_BETTER else after < before


def change(name: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """'4.1 -> 38.5' (a side not measured: '-')."""
    b, a = (("-" if v is None else f"{v:.4g}") for v in (before.get(name), after.get(name)))
    return f"{b} -> {a}"


def before_after(name: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """'BLEU 4.1 -> 38.5'."""
    return f"{LABELS.get(name, name)} {change(name, before, after)}"
