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
    """The data stage's settings; the comment names the spec key each one comes from."""

    format: str  # data.format: chat, instruction, completion or text
    columns: dict[str, str]  # data.columns: the format's fields -> dataset columns (dotted paths for nested ones)
    max_length: int  # data.max_length, resolved: longer examples are truncated
    roles: dict[str, str]  # data.roles: extra role names -> system/user/assistant, on top of the usual ones
    template: str | None  # data.template: a Jinja prompt template used instead of the chat template
    train_on: str  # data.train_on: answers, last_answer or inputs_too (what text data trains)
    validation: float | str  # data.validation: the held-out share, or a validation source
    seed: int  # train.seed: the validation split, the mixing subsample and the padding estimate
    dedup: bool  # data.clean.dedup: drop exact duplicates after the first
    near_dedup: float | None  # data.clean.near_dedup: drop examples this similar to an earlier one
    min_tokens: int  # data.clean.min_tokens: drop shorter examples
    max_tokens: int | None  # data.clean.max_tokens: drop longer examples
    untrained: str  # data.clean.untrained: examples with no trained token stop the stage ("error") or are dropped
