"""LoRA and its variants: a low-rank update W + (alpha/r)·B·A on the target modules of a frozen
base, which may be quantized (QLoRA 4-bit NF4, LLM.int8 8-bit). All of them merge into the base."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.limits import Name
from ftc.compiler.methods.base import (NameList, ActivationTerms, AdapterName, Finding, Imports, Knob, MethodBase, MethodPlan,
                                       Quantize, model_type, module_list_problems)

if TYPE_CHECKING:
    from ftc.compiler.checks import Facts
    from ftc.compiler.estimate import Dims
    from ftc.compiler.spec import Spec

class Lora(MethodBase):
    """`kind = "lora"`: freeze the base and learn W + (alpha/r)·B·A on the target modules."""

    kind: Literal["lora"] = "lora"
    """Method selector."""
    r: int = Field(8, gt=0, le=4096)
    """Rank of the update; the seeds use 4 to 64."""
    alpha: float = Field(16, gt=0, le=1e6)
    """Scale numerator: the update is multiplied by alpha / r. Usually r or 2r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input; the seeds use 0.05 to 0.1."""
    target_modules: Literal["auto", "all-linear"] | Annotated[list[Name], NameList] = "auto"
    """`"auto"`: every linear layer of the blocks (not the output head), named from the model's
    architecture at compile time; `"all-linear"`: the same, found by PEFT at run time; or a list
    of module names such as `["q_proj", "v_proj"]`, checked against the architecture."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit, as QLoRA) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too (QLoRA paper: 0.37 bit/param saved)."""
    int8_threshold: float = Field(6.0, ge=0, le=1e6)
    """With `quantize = "int8"`: LLM.int8 outlier threshold; activation columns above it run in
    16-bit (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"). A named adapter is saved in
    `final/<name>/`, so several adapters trained on one base can be loaded side by side and
    switched by name (`ftc generate`)."""

    template: ClassVar[str] = "lora"
    title: ClassVar[str] = "LoRA"
    default_learning_rate: ClassVar[float] = 2e-4
    """Seeds: LoRA up to ~2e-4 (on 7B models, alpha / r = 2)."""
    width_scaled_lr: ClassVar[bool] = True
    mergeable: ClassVar[bool] = True
    peft: ClassVar[bool] = True
    peft_flags: ClassVar[dict[str, bool]] = {"use_dora": False, "use_rslora": False}
    int8_ok: ClassVar[bool] = True
    nf4_ok: ClassVar[bool] = True

    def update_scale(self) -> float | None:
        return self.alpha / self.r

    @model_validator(mode="after")
    def _quantization_supported(self) -> Lora:
        if self.quantize == "int8" and not self.int8_ok or self.quantize == "nf4" and not self.nf4_ok:
            raise ValueError(f"method.quantize = {self.quantize!r} cannot be combined with kind = {self.kind!r}: "
                             f"{self._why_not_quantized()}")
        return self

    def _why_not_quantized(self) -> str:
        return ""

    def _knob(self, key: str, value: Any, why: str, config: dict[str, Any]) -> dict[str, Knob]:
        if key == "target_modules" and value == "auto":
            arch = str(config.get("model_type")) if config else None
            if arch in LINEAR_MODULES:
                return {key: Knob(list(LINEAR_MODULES[arch]), f"derived: every linear layer of a {arch} block")}
            return {key: Knob("all-linear", "derived: every linear layer but the head, found by PEFT at run time")}
        return {key: Knob(value, why)}

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """A (r x in) and B (out x r) for every targeted linear of every block."""
        return d.layers * sum(self.r * (i + o) for i, o in d.targeted(plan["target_modules"]).values())

    def largest_trainable_tensor(self, plan: MethodPlan, d: Dims) -> int:
        return max(self.r * max(i, o) for i, o in d.linears().values())

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """LoRA (fp32 adapters): each adapted layer's input is cast to fp32 and dropped out; lora_A
        keeps the result (4 B) and dropout its mask (1 B); q, k and v each do this separately.
        lora_A's r-wide output is kept by lora_B."""
        drop = 5 if self.dropout > 0 else (4 if e != 4 else 0)
        extra = sum(drop * i + 4 * self.r + self._per_output(o) for i, o in d.targeted(plan["target_modules"]).values())
        # Without dropout lora_A keeps the norms' outputs themselves, and what a frozen base does not keep shows:
        # ActivationTerms.frozen_norms (measured in fp32: PiSSA, and the preference trainers, which disable
        # dropout). With dropout the measured 5 B per input were fitted with it included; not measured on a
        # quantized base nor for DoRA, so those keep the fitted terms.
        lean = self.dropout == 0 and self.quantization is None and not self.peft_flags["use_dora"]
        return ActivationTerms(keeps_linear_inputs=True, final_norm_trained=not lean, per_token=extra,
                               frozen_norms=lean)

    def _per_output(self, out_features: int) -> int:
        """Bytes per token and output feature of an adapted layer that the variant keeps besides LoRA's."""
        return 0

    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        yield from super().checks(spec, facts)
        arch = model_type(facts)
        if arch in LINEAR_MODULES and isinstance(self.target_modules, list):
            yield from module_list_problems("method.target_modules", self.target_modules, LINEAR_MODULES[arch], arch)

    @classmethod
    def imports(cls) -> Imports:
        return Imports(peft=("LoraConfig", "get_peft_model"))


class QLora(Lora):
    """`kind = "qlora"`: LoRA on a base loaded in 4-bit NF4 with bitsandbytes (QLoRA); the same as
    `kind = "lora"` with `quantize = "nf4"`."""

    kind: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    """Method selector."""
    quantize: Literal["nf4"] = "nf4"  # type: ignore[assignment]
    """Fixed: 4-bit NF4."""
    title: ClassVar[str] = "QLoRA (LoRA on a 4-bit NF4 base)"
    fallbacks: ClassVar[tuple[str, ...]] = ()


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
    peft_flags: ClassVar[dict[str, bool]] = {"use_dora": True, "use_rslora": False}
    int8_ok: ClassVar[bool] = False

    def _why_not_quantized(self) -> str:
        return "PEFT 0.21's DoRA layer fails on an LLM.int8 base (its forward finds no weight scale); use \"nf4\" (QDoRA, on CUDA) or \"none\""

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """LoRA's, plus a magnitude per output feature of every adapted layer."""
        return super().trainable_parameters(plan, d) + d.layers * sum(
            o for _i, o in d.targeted(plan["target_modules"]).values())

    def _per_output(self, out_features: int) -> int:
        # DoRA (peft tuners/lora/variants.py, dora.py): with dropout the base output is recomputed
        # from the dropped input, and the magnitude's multiplies keep it and the LoRA output, both
        # out-wide in fp32 (measured within 5 % of activations).
        return 2 * 4 * out_features

    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        yield from super().checks(spec, facts)
        if self.quantization == "nf4" and spec.hardware.device == "cpu":
            yield "method.quantize", ("DoRA on a 4-bit base does not learn on CPU with PEFT 0.21 + bitsandbytes 0.50 "
                                      "(measured on SmolLM2-135M: validation loss 10.1 -> 10.05 while training loss "
                                      "fell; PEFT's CPU dequantization of 4-bit weights, which DoRA's weight norm "
                                      "uses, differs from bitsandbytes' own); on CPU use quantize = \"none\" or "
                                      "kind = \"qlora\"")


class RsLora(Lora):
    """`kind = "rslora"`: rank-stabilized LoRA: the update is scaled by alpha / sqrt(r) instead of
    alpha / r, so higher ranks keep learning."""

    kind: Literal["rslora"] = "rslora"  # type: ignore[assignment]
    """Method selector."""
    title: ClassVar[str] = "rsLoRA (rank-stabilized LoRA)"
    peft_flags: ClassVar[dict[str, bool]] = {"use_dora": False, "use_rslora": True}

    def update_scale(self) -> float | None:
        return self.alpha / self.r ** 0.5


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
    int8_ok: ClassVar[bool] = False
    nf4_ok: ClassVar[bool] = False
    save_template: ClassVar[str | None] = "pissa_save"
    rewrites_base_weights: ClassVar[bool] = True

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
    own_optimizer: ClassVar[str | None] = "LoRA+'s two-rate AdamW; the scheduler is built from SCHEDULER"

    @classmethod
    def imports(cls) -> Imports:
        return Imports(peft=("LoraConfig", "get_peft_model"),
                       lines=("from peft.optimizers import create_loraplus_optimizer",))
