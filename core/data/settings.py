"""DataSettings: how rows become training examples, one object per run.

train.py builds it from its CONFIG block, `ftc data` from the plan, compile from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataSettings:
    """The data stage's settings, each one read from the plan (spec key in parentheses)."""

    format: str
    """chat, instruction, completion or text (data.format)."""
    columns: dict[str, str]
    """The format's fields -> dataset columns or dotted paths (data.columns)."""
    max_length: int
    """Tokens per example; longer ones are truncated (data.max_length, resolved)."""
    roles: dict[str, str] = field(default_factory=dict)
    """Extra role names -> system/user/assistant, on top of the usual ones (data.roles)."""
    template: str | None = None
    """A Jinja prompt template used instead of the chat template, or None (data.template)."""
    train_on: str = "answers"
    """Which turns are trained: answers, last_answer or inputs_too (data.train_on)."""
    validation: float | str = 0.0
    """The held-out share, or a validation source (data.validation)."""
    seed: int = 42
    """Seed of the validation split, the mixing subsample and the padding estimate (train.seed)."""
    dedup: bool = True
    """Drop exact duplicates after the first (data.clean.dedup)."""
    near_dedup: float | None = None
    """Drop examples at least this similar to an earlier one, or None (data.clean.near_dedup)."""
    min_tokens: int = 0
    """Drop examples shorter than this (data.clean.min_tokens)."""
    max_tokens: int | None = None
    """Drop examples longer than this, or None (data.clean.max_tokens)."""
    untrained: str = "error"
    """Examples with no trained token: "error" stops the stage, "drop" drops them (data.clean.untrained)."""
