"""DataSettings: how rows become training examples, one object per run.

The compiler decides it once from the resolved spec (`ftc.compiler.tokens.data_settings`); the
compile-time measurement, the plan (and so `ftc data`) hold that object, and train.py rebuilds it
field by field from its CONFIG block. No field has a default: a field left out is an error at
construction, never a run that silently differs from its plan.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataSettings:
    """The data stage's settings, each one read from the plan (spec key in parentheses)."""

    format: str
    """chat, instruction, completion or text (data.format)."""
    columns: dict[str, str]
    """The format's fields -> dataset columns or dotted paths (data.columns)."""
    max_length: int
    """Tokens per example; longer ones are truncated (data.max_length, resolved)."""
    roles: dict[str, str]
    """Extra role names -> system/user/assistant, on top of the usual ones (data.roles)."""
    template: str | None
    """A Jinja prompt template used instead of the chat template, or None (data.template)."""
    train_on: str
    """Which turns are trained: answers, last_answer or inputs_too (data.train_on)."""
    validation: float | str
    """The held-out share, or a validation source (data.validation)."""
    seed: int
    """Seed of the validation split, the mixing subsample and the padding estimate (train.seed)."""
    dedup: bool
    """Drop exact duplicates after the first (data.clean.dedup)."""
    near_dedup: float | None
    """Drop examples at least this similar to an earlier one, or None (data.clean.near_dedup)."""
    min_tokens: int
    """Drop examples shorter than this (data.clean.min_tokens)."""
    max_tokens: int | None
    """Drop examples longer than this, or None (data.clean.max_tokens)."""
    untrained: str
    """Examples with no trained token: "error" stops the stage, "drop" drops them (data.clean.untrained)."""
