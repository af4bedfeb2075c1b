"""Full fine-tuning: every parameter is trained."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict


class Full(BaseModel):
    """`kind = "full"`: update every weight of the model. Needs the most memory (weights,
    gradients and two AdamW states for every parameter)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["full"] = "full"
    """Method selector."""

    template: ClassVar[str] = "full"
    default_learning_rate: ClassVar[float] = 2e-5
    """Seeds: full fine-tuning uses 1e-5 to 1e-4."""
    quantization: ClassVar[str | None] = None
    """Full fine-tuning trains the weights themselves, so they cannot be quantized."""
