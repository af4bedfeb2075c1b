"""Adapters that are neither low-rank updates nor prompts: IA3 (learned rescaling vectors) and
LLaMA-Adapter (adaption prompts with zero-initialised gates on the top layers)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ftc.compiler.methods.base import AdapterName, MethodBase, Quantize

LLAMA_ADAPTER_MODEL_TYPES = ("llama", "mistral")
"""Architectures PEFT 0.21's adaption prompt supports for causal language models
(peft/tuners/adaption_prompt/config.py; gpt2 is listed there but has no q/k/v projections of its own)."""


class Ia3(MethodBase):
    """`kind = "ia3"`: IA3: learned vectors rescale the keys, values and the MLP's inner
    activations; a tiny number of parameters (about 0.01 % of the model)."""

    kind: Literal["ia3"] = "ia3"
    """Method selector."""
    target_modules: Literal["auto"] | list[str] = "auto"
    """`"auto"`: PEFT's choice for the architecture (e.g. k_proj, v_proj, down_proj for Llama);
    or a list of module names, checked against the architecture."""
    feedforward_modules: Literal["auto"] | list[str] = "auto"
    """Which of `target_modules` are feed-forward layers (their input is rescaled, not their
    output); `"auto"` with `target_modules = "auto"`."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too."""
    int8_threshold: float = Field(6.0, ge=0)
    """With `quantize = "int8"`: LLM.int8 outlier threshold (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    template: ClassVar[str] = "ia3"
    title: ClassVar[str] = "IA3 (learned rescaling vectors)"
    default_learning_rate: ClassVar[float] = 3e-3
    """IA3's authors use 3e-3."""
    mergeable: ClassVar[bool] = True
    peft: ClassVar[bool] = True


class LlamaAdapter(MethodBase):
    """`kind = "llama_adapter"`: LLaMA-Adapter (adapter tuning): trained adaption prompts on the
    top `layers` attention layers, mixed in through gates that start at zero, so training starts
    from the unchanged model. Llama and Mistral architectures; unquantized bases only."""

    kind: Literal["llama_adapter"] = "llama_adapter"
    """Method selector."""
    adapter_len: int = Field(10, gt=0, le=1024)
    """Length of the adaption prompt of each adapted layer (the paper uses 10)."""
    layers: int = Field(8, gt=0)
    """How many of the top layers get an adaption prompt (at most the model's depth)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    CONFIG_NAMES: ClassVar[dict[str, str]] = {**MethodBase.CONFIG_NAMES, "layers": "ADAPTER_LAYERS"}
    template: ClassVar[str] = "llama_adapter"
    title: ClassVar[str] = "LLaMA-Adapter (gated adaption prompts)"
    default_learning_rate: ClassVar[float] = 9e-3
    """The LLaMA-Adapter paper uses 9e-3."""
    trainer: ClassVar[Literal["sft", "hf"]] = "hf"
    peft: ClassVar[bool] = True
