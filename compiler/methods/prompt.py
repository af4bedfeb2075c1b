"""Prompt-learning methods: the base stays frozen and unchanged; trained vectors are prepended,
either to the input embeddings (`prompt`, `ptuning`) or to every layer's keys and values
(`prefix`). They train with transformers' Trainer (TRL's SFTTrainer builds attention masks that
do not count the virtual tokens) and cannot be merged into the base."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.limits import Text
from ftc.compiler.methods.base import (ActivationTerms, AdapterName, Imports, KeyConflict, Knob, MethodBase,
                                       MethodPlan, Quantize)

if TYPE_CHECKING:
    from ftc.compiler.estimate import Dims


class _PromptLearning(MethodBase):
    virtual_tokens: int = Field(20, gt=0, le=1024)
    """Number of trained virtual tokens (the seeds use 10 to 100)."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too."""
    int8_threshold: float = Field(6.0, ge=0, le=1e6)
    """With `quantize = "int8"`: LLM.int8 outlier threshold (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    trainer: ClassVar[Literal["sft", "hf"]] = "hf"
    peft: ClassVar[bool] = True
    sharding_problem: ClassVar[str] = (
        "PEFT sets up the prompt encoder from the input embedding matrix, which ZeRO-3 and FSDP have sharded "
        "to an empty slice (peft#206, peft#1633; llama-cookbook#359 for prefix tuning under FSDP); prompt "
        "learning trains few parameters, so use strategy = \"ddp\" (or \"zero2\")")
    peft_config: ClassVar[str]
    """The PEFT config class the template builds."""

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """A frozen base; the soft prompt lengthens every sequence (prefix overrides it)."""
        return ActivationTerms(prompt_tokens=self.virtual_tokens)

    @classmethod
    def imports(cls) -> Imports:
        return Imports(peft=(cls.peft_config, "get_peft_model"))


class Prefix(_PromptLearning):
    """`kind = "prefix"`: prefix tuning / P-tuning v2: trained key and value vectors are prepended
    at every layer."""

    kind: Literal["prefix"] = "prefix"
    """Method selector."""
    projection: bool = False
    """Produce the prefixes with a two-layer MLP (prefix tuning's reparameterization; more
    stable, more parameters) instead of training them directly (P-tuning v2)."""
    encoder_hidden_size: int = Field(512, gt=0, le=65536)
    """With `projection = true`: the MLP's hidden width."""

    template: ClassVar[str] = "prompt"
    title: ClassVar[str] = "prefix tuning (P-tuning v2: trained prefixes at every layer)"
    checkpointing_ok: ClassVar[bool] = False
    """PEFT 0.21's prefixes break under gradient checkpointing (the recomputed attention sees a
    mask without them: "size of tensor a (11) must match the size of tensor b (19)")."""
    checkpointing_problem: ClassVar[str] = "PEFT's prefixes break in the recomputed attention"
    default_learning_rate: ClassVar[float] = 1e-2
    """Seeds: prefix tuning uses ~1e-2 (few parameters, far from the weights)."""
    peft_config: ClassVar[str] = "PrefixTuningConfig"

    @model_validator(mode="after")
    def _width_needs_projection(self) -> Prefix:
        if "encoder_hidden_size" in self.model_fields_set and not self.projection:
            raise KeyConflict("method.encoder_hidden_size", "is the width of the projection MLP, but "
                              "method.projection = false trains the prefixes directly, so it would be ignored; "
                              "set projection = true or remove encoder_hidden_size")
        return self

    def _knob(self, key: str, value: Any, why: str, config: dict[str, Any]) -> dict[str, Knob]:
        return {} if key == "encoder_hidden_size" and not self.projection else {key: Knob(value, why)}

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """Keys and values of every layer, or a kv-wide embedding and an MLP that makes them."""
        kv = 2 * d.layers * d.kv_dim
        if self.projection:
            e = self.encoder_hidden_size
            return self.virtual_tokens * d.kv_dim + (d.kv_dim * e + e) + (e * kv + kv)
        return self.virtual_tokens * kv

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """The prefixes lengthen every layer's keys and values, not the input."""
        return ActivationTerms(prefix_tokens=self.virtual_tokens)


class PTuning(_PromptLearning):
    """`kind = "ptuning"`: P-tuning: virtual token embeddings produced by a small trained prompt
    encoder (MLP or LSTM) and prepended to the input."""

    kind: Literal["ptuning"] = "ptuning"
    """Method selector."""
    encoder: Literal["mlp", "lstm"] = "mlp"
    """The prompt encoder's architecture."""
    encoder_hidden_size: int = Field(256, gt=0, le=65536)
    """The prompt encoder's hidden width."""

    template: ClassVar[str] = "prompt"
    title: ClassVar[str] = "P-tuning (virtual tokens from a prompt encoder)"
    default_learning_rate: ClassVar[float] = 1e-2
    peft_config: ClassVar[str] = "PromptEncoderConfig"

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """The virtual tokens' embedding and the MLP encoder h -> e -> e -> h."""
        e = self.encoder_hidden_size
        return self.virtual_tokens * d.h + (d.h * e + e) + (e * e + e) + (e * d.h + d.h)


class Prompt(_PromptLearning):
    """`kind = "prompt"`: prompt tuning: a soft prompt of trained embeddings prepended to the input."""

    kind: Literal["prompt"] = "prompt"
    """Method selector."""
    init_text: Text | None = None
    """Start the soft prompt from the embeddings of this text (e.g. a task description) instead of
    random vectors; it is repeated or cut to `virtual_tokens` tokens."""

    template: ClassVar[str] = "prompt"
    title: ClassVar[str] = "prompt tuning (a trained soft prompt)"
    default_learning_rate: ClassVar[float] = 3e-2
    """Prompt tuning needs high rates (the paper uses 0.3 with Adafactor)."""
    peft_config: ClassVar[str] = "PromptTuningConfig"

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        return self.virtual_tokens * d.h

    @model_validator(mode="after")
    def _init_text_is_text(self) -> Prompt:
        if self.init_text is not None and not self.init_text.strip():
            raise ValueError("method.init_text is blank; give a task description or leave it out")
        return self
