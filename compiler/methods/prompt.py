"""Prompt-learning methods: the base stays frozen and unchanged; trained vectors are prepended,
either to the input embeddings (`prompt`, `ptuning`) or to every layer's keys and values
(`prefix`). They train with transformers' Trainer (TRL's SFTTrainer builds attention masks that
do not count the virtual tokens) and cannot be merged into the base."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.methods.base import AdapterName, MethodBase, Quantize


class _PromptLearning(MethodBase):
    virtual_tokens: int = Field(20, gt=0, le=1024)
    """Number of trained virtual tokens (the seeds use 10 to 100)."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too."""
    int8_threshold: float = Field(6.0, ge=0)
    """With `quantize = "int8"`: LLM.int8 outlier threshold (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    trainer: ClassVar[Literal["sft", "hf"]] = "hf"
    peft: ClassVar[bool] = True


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
    default_learning_rate: ClassVar[float] = 1e-2
    """Seeds: prefix tuning uses ~1e-2 (few parameters, far from the weights)."""


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


class Prompt(_PromptLearning):
    """`kind = "prompt"`: prompt tuning: a soft prompt of trained embeddings prepended to the input."""

    kind: Literal["prompt"] = "prompt"
    """Method selector."""
    init_text: str | None = Field(None, min_length=1)
    """Start the soft prompt from the embeddings of this text (e.g. a task description) instead of
    random vectors; it is repeated or cut to `virtual_tokens` tokens."""

    template: ClassVar[str] = "prompt"
    title: ClassVar[str] = "prompt tuning (a trained soft prompt)"
    default_learning_rate: ClassVar[float] = 3e-2
    """Prompt tuning needs high rates (the paper uses 0.3 with Adafactor)."""

    @model_validator(mode="after")
    def _init_text_is_text(self) -> Prompt:
        if self.init_text is not None and not self.init_text.strip():
            raise ValueError("method.init_text is blank; give a task description or leave it out")
        return self
