"""LoRA and its quantized-base variants (QLoRA 4-bit NF4, 8-bit LLM.int8 base)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class Lora(BaseModel):
    """`kind = "lora"`: freeze the base and learn W + (alpha/r)·B·A on the target modules."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["lora"] = "lora"
    """Method selector."""
    r: int = Field(8, gt=0, le=4096)
    """Rank of the update; the seeds use 4 to 64."""
    alpha: float = Field(16, gt=0)
    """Scale numerator: the update is multiplied by alpha / r. Usually r or 2r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input; the seeds use 0.05 to 0.1."""
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    """`"all-linear"` (every linear layer but the output head) or a list of module names such as
    `["q_proj", "v_proj"]`."""

    template: ClassVar[str] = "lora"
    default_learning_rate: ClassVar[float] = 2e-4
    """Seeds: LoRA up to ~2e-4."""
    quantization: ClassVar[str | None] = None


class QLora(Lora):
    """`kind = "qlora"`: LoRA on a base loaded in 4-bit NF4 with bitsandbytes (QLoRA)."""

    kind: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    """Method selector."""
    double_quant: bool = True
    """Quantize the quantization constants too (QLoRA paper: 0.37 bit/param saved)."""
    quantization: ClassVar[str | None] = "nf4"


class Lora8(Lora):
    """`kind = "lora8"`: LoRA on a base loaded in 8-bit (LLM.int8) with bitsandbytes."""

    kind: Literal["lora8"] = "lora8"  # type: ignore[assignment]
    """Method selector."""
    int8_threshold: float = Field(6.0, ge=0)
    """LLM.int8 outlier threshold: activation columns above it run in 16-bit (bitsandbytes default 6.0)."""
    quantization: ClassVar[str | None] = "int8"
