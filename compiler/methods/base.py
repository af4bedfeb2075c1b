"""What every method config shares: the pydantic base and the class-level facts the planner and
the emitter read (template, title, default learning rate, trainer, mergeability)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Quantize = Literal["none", "nf4", "int8"]
AdapterName = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)


class MethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    template: ClassVar[str]
    """templates/methods/<template>.py.j2 emits the method section."""
    title: ClassVar[str]
    """What train.py's docstring calls the method."""
    default_learning_rate: ClassVar[float]
    trainer: ClassVar[Literal["sft", "hf"]] = "sft"
    """"sft": TRL's SFTTrainer; "hf": transformers' Trainer with a padding collator (PEFT's
    prompt-learning methods and LLaMA-Adapter, which SFTTrainer's batches break)."""
    mergeable: ClassVar[bool] = False
    """Whether `ftc merge` can fold the trained weights into the base."""
    peft: ClassVar[bool] = False
    """Whether the result is a PEFT adapter (reloaded with PeftModel.from_pretrained)."""
    checkpointing_ok: ClassVar[bool] = True
    """Whether training works with gradient checkpointing."""

    @property
    def quantization(self) -> str | None:
        """bitsandbytes format of the frozen base: "nf4", "int8" or None."""
        value = getattr(self, "quantize", "none")
        return None if value == "none" else value
