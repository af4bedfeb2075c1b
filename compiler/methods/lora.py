"""LoRA and its variants: a low-rank update W + (alpha/r)·B·A on the target modules of a frozen
base, which may be quantized (QLoRA 4-bit NF4, LLM.int8 8-bit). All of them merge into the base."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.methods.base import AdapterName, MethodBase, Quantize

Targets = Literal["auto", "all-linear"] | list[str]


class Lora(MethodBase):
    """`kind = "lora"`: freeze the base and learn W + (alpha/r)·B·A on the target modules."""

    kind: Literal["lora"] = "lora"
    """Method selector."""
    r: int = Field(8, gt=0, le=4096)
    """Rank of the update; the seeds use 4 to 64."""
    alpha: float = Field(16, gt=0)
    """Scale numerator: the update is multiplied by alpha / r. Usually r or 2r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input; the seeds use 0.05 to 0.1."""
    target_modules: Targets = "auto"
    """`"auto"`: every linear layer of the blocks (not the output head), named from the model's
    architecture at compile time; `"all-linear"`: the same, found by PEFT at run time; or a list
    of module names such as `["q_proj", "v_proj"]`, checked against the architecture."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit, as QLoRA) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too (QLoRA paper: 0.37 bit/param saved)."""
    int8_threshold: float = Field(6.0, ge=0)
    """With `quantize = "int8"`: LLM.int8 outlier threshold; activation columns above it run in
    16-bit (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"). A named adapter is saved in
    `final/<name>/`, so several adapters trained on one base can be loaded side by side and
    switched by name (`ftc generate`)."""

    template: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA"
    default_learning_rate: ClassVar[float] = 2e-4
    """Seeds: LoRA up to ~2e-4."""
    mergeable: ClassVar[bool] = True
    peft: ClassVar[bool] = True
    variant: ClassVar[str | None] = None
    """What the LoraConfig adds for this variant (use_dora, use_rslora, init_lora_weights, LoRA+)."""
    int8_ok: ClassVar[bool] = True
    nf4_ok: ClassVar[bool] = True

    @model_validator(mode="after")
    def _quantization_supported(self) -> Lora:
        if self.quantize == "int8" and not self.int8_ok or self.quantize == "nf4" and not self.nf4_ok:
            raise ValueError(f"method.quantize = {self.quantize!r} cannot be combined with kind = {self.kind!r}: "
                             f"{self._why_not_quantized()}")
        return self

    def _why_not_quantized(self) -> str:
        return ""


class QLora(Lora):
    """`kind = "qlora"`: LoRA on a base loaded in 4-bit NF4 with bitsandbytes (QLoRA); the same as
    `kind = "lora"` with `quantize = "nf4"`."""

    kind: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    """Method selector."""
    quantize: Literal["nf4"] = "nf4"  # type: ignore[assignment]
    """Fixed: 4-bit NF4."""
    title: ClassVar[str] = "QLoRA (LoRA on a 4-bit NF4 base)"


class Lora8(Lora):
    """`kind = "lora8"`: LoRA on a base loaded in 8-bit (LLM.int8) with bitsandbytes; the same as
    `kind = "lora"` with `quantize = "int8"`."""

    kind: Literal["lora8"] = "lora8"  # type: ignore[assignment]
    """Method selector."""
    quantize: Literal["int8"] = "int8"  # type: ignore[assignment]
    """Fixed: LLM.int8."""
    title: ClassVar[str] = "LoRA on an 8-bit base"


class Dora(Lora):
    """`kind = "dora"`: DoRA, weight-decomposed LoRA: the weight's direction gets the low-rank
    update and its magnitude (one value per output feature) is trained separately. Slower than
    LoRA; closer to full fine-tuning at low ranks."""

    kind: Literal["dora"] = "dora"  # type: ignore[assignment]
    """Method selector."""
    title: ClassVar[str] = "DoRA (weight-decomposed LoRA)"
    variant: ClassVar[str | None] = "dora"
    int8_ok: ClassVar[bool] = False

    def _why_not_quantized(self) -> str:
        return "PEFT 0.21's DoRA layer fails on an LLM.int8 base (its forward finds no weight scale); use \"nf4\" (QDoRA, on CUDA) or \"none\""


class RsLora(Lora):
    """`kind = "rslora"`: rank-stabilized LoRA: the update is scaled by alpha / sqrt(r) instead of
    alpha / r, so higher ranks keep learning."""

    kind: Literal["rslora"] = "rslora"  # type: ignore[assignment]
    """Method selector."""
    title: ClassVar[str] = "rsLoRA (rank-stabilized LoRA)"
    variant: ClassVar[str | None] = "rslora"


class Pissa(Lora):
    """`kind = "pissa"`: PiSSA: A and B start from the principal singular vectors of each weight
    (and the base keeps the residual), which converges faster than LoRA's zero start. The saved
    adapter is converted to a plain LoRA of rank 2r that applies to the original base."""

    kind: Literal["pissa"] = "pissa"  # type: ignore[assignment]
    """Method selector."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input (PiSSA's authors use 0)."""
    svd_iters: int = Field(4, ge=0, le=64)
    """Iterations of the fast randomized SVD (0: exact SVD, slow on large weights)."""
    title: ClassVar[str] = "PiSSA (LoRA initialised from principal singular vectors)"
    variant: ClassVar[str | None] = "pissa"
    int8_ok: ClassVar[bool] = False
    nf4_ok: ClassVar[bool] = False

    def _why_not_quantized(self) -> str:
        return ("PiSSA rewrites the base weights with the SVD residual, which PEFT can only do in "
                "fp32/fp16/bf16; use kind = \"lora\" with this quantization, or no quantization")


class LoraPlus(Lora):
    """`kind = "loraplus"`: LoRA+: B learns `ratio` times faster than A (an optimizer with two
    learning rates), which speeds up LoRA at the same cost."""

    kind: Literal["loraplus"] = "loraplus"  # type: ignore[assignment]
    """Method selector."""
    ratio: float = Field(16.0, ge=1, le=1024)
    """Learning rate of B divided by that of A (the LoRA+ paper uses 16)."""
    title: ClassVar[str] = "LoRA+ (B learns faster than A)"
    variant: ClassVar[str | None] = "loraplus"
