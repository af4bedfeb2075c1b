"""Methods that train the model's own weights: all of them (`full`), or chosen ones (`freeze`,
and its preset `linear_probe`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.methods.base import MethodBase


class Full(MethodBase):
    """`kind = "full"`: update every weight of the model. Needs the most memory (weights,
    gradients and two AdamW states for every parameter)."""

    kind: Literal["full"] = "full"
    """Method selector."""

    template: ClassVar[str] = "full"
    title: ClassVar[str] = "full fine-tuning (every weight)"
    default_learning_rate: ClassVar[float] = 2e-5
    """Seeds: full fine-tuning uses 1e-5 to 1e-4."""


class Freeze(MethodBase):
    """`kind = "freeze"`: freeze the model except the last `layers` decoder blocks (all of their
    weights, or only those whose names contain one of `modules`), and optionally the output head."""

    kind: Literal["freeze"] = "freeze"
    """Method selector."""
    layers: int = Field(2, ge=0)
    """How many of the last decoder blocks are trained (0: none, e.g. with `head = true`)."""
    modules: list[str] = Field(default_factory=list)
    """Train only the weights of those blocks whose names contain one of these, e.g.
    `["self_attn"]` (attention only) or `["mlp"]`; empty: the whole block."""
    head: bool = False
    """Also train the output head (lm_head). With tied embeddings this trains the input
    embeddings too (they are the same tensor)."""

    template: ClassVar[str] = "freeze"
    title: ClassVar[str] = "partial fine-tuning (chosen layers; the rest frozen)"
    default_learning_rate: ClassVar[float] = 5e-5
    """Seeds: partial tuning uses a full fine-tuning rate, slightly higher since fewer weights move."""

    @model_validator(mode="after")
    def _trains_something(self) -> Freeze:
        if self.layers == 0 and not self.head:
            raise ValueError("method.layers = 0 with head = false trains nothing; train some blocks or the head")
        return self


class LinearProbe(Freeze):
    """`kind = "linear_probe"`: the `freeze` preset that trains the output head only."""

    kind: Literal["linear_probe"] = "linear_probe"  # type: ignore[assignment]
    """Method selector."""
    layers: Literal[0] = 0  # type: ignore[assignment]
    """Fixed: no decoder block is trained."""
    modules: list[str] = Field(default_factory=list, max_length=0)
    """Fixed: empty."""
    head: Literal[True] = True  # type: ignore[assignment]
    """Fixed: the head is what trains."""

    title: ClassVar[str] = "linear probing (the output head only)"
    default_learning_rate: ClassVar[float] = 1e-3
    """A single linear layer tolerates a high rate."""
