"""Adapters that are neither low-rank updates nor prompts: IA3 (learned rescaling vectors) and
LLaMA-Adapter (adaption prompts with zero-initialised gates on the top layers)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import Field

from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.limits import Name
from ftc.compiler.methods.base import (NameList, ActivationTerms, AdapterName, Finding, Imports, Knob, MethodBase, MethodPlan,
                                       Quantize, model_type, module_list_problems)

if TYPE_CHECKING:
    from ftc.compiler.checks import Facts
    from ftc.compiler.estimate import Dims
    from ftc.compiler.spec import Spec

LLAMA_ADAPTER_MODEL_TYPES = ("llama", "mistral")
"""Architectures PEFT 0.21's adaption prompt supports for causal language models
(peft/tuners/adaption_prompt/config.py; gpt2 is listed there but has no q/k/v projections of its own)."""
# IA3's default targets and feed-forward modules per model_type, as PEFT 0.21 maps them
# (peft/utils/constants.py TRANSFORMERS_MODELS_TO_IA3_*).
IA3_DEFAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    **{t: (("k_proj", "v_proj", "down_proj"), ("down_proj",)) for t in ("llama", "mistral")},
    **{t: (("q_proj", "v_proj", "down_proj"), ("down_proj",)) for t in ("qwen2", "qwen3", "gemma", "gemma2")},
}


class Ia3(MethodBase):
    """`kind = "ia3"`: IA3: learned vectors rescale the keys, values and the MLP's inner
    activations; a tiny number of parameters (about 0.01 % of the model)."""

    kind: Literal["ia3"] = "ia3"
    """Method selector."""
    target_modules: Literal["auto"] | Annotated[list[Name], NameList] = "auto"
    """`"auto"`: PEFT's choice for the architecture (e.g. k_proj, v_proj, down_proj for Llama);
    or a list of module names, checked against the architecture."""
    feedforward_modules: Literal["auto"] | Annotated[list[Name], NameList] = "auto"
    """Which of `target_modules` are feed-forward layers (their input is rescaled, not their
    output); `"auto"` with `target_modules = "auto"`."""
    quantize: Quantize = "none"
    """Load the frozen base quantized: `"nf4"` (4-bit) or `"int8"` (LLM.int8)."""
    double_quant: bool = True
    """With `quantize = "nf4"`: quantize the quantization constants too."""
    int8_threshold: float = Field(6.0, ge=0, le=1e6)
    """With `quantize = "int8"`: LLM.int8 outlier threshold (bitsandbytes default 6.0)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    template: ClassVar[str] = "ia3"
    title: ClassVar[str] = "IA3 (learned rescaling vectors)"
    default_learning_rate: ClassVar[float] = 3e-3
    """IA3's authors use 3e-3."""
    mergeable: ClassVar[bool] = True
    peft: ClassVar[bool] = True

    def _knob(self, key: str, value: Any, why: str, config: dict[str, Any]) -> dict[str, Knob]:
        arch = str(config.get("model_type")) if config else None
        if key == "target_modules" and value == "auto" and arch in IA3_DEFAULTS:
            targets, feedforward = IA3_DEFAULTS[arch]
            return {"feedforward_modules": Knob(list(feedforward), f"derived: PEFT's IA3 feed-forward modules for "
                                                f"{arch} blocks"),
                    key: Knob(list(targets), f"derived: PEFT's IA3 targets for {arch} blocks")}
        if value == "auto":  # both lists: PEFT's choice, at run time
            return {key: Knob(None, "derived: PEFT's IA3 defaults for the architecture, at run time")}
        return {key: Knob(value, why)}

    def _targets(self, plan: MethodPlan, d: Dims) -> tuple[dict[str, tuple[int, int]], list[str]]:
        """The scaled layers and the feed-forward ones; PEFT's choice unknown to ftc is estimated as Llama's."""
        targets, feedforward = IA3_DEFAULTS["llama"]
        return d.targeted(plan["target_modules"] or targets), plan["feedforward_modules"] or list(feedforward)

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """One scale per output feature, or per input feature of feed-forward layers."""
        targets, feedforward = self._targets(plan, d)
        return d.layers * sum(i if n in feedforward else o for n, (i, o) in targets.items())

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """A frozen block, plus what IA3's scaling multiplies keep for the vectors' gradient (peft
        tuners/ia3/layer.py Linear.forward): a scaled output (k, v) keeps the unscaled output in
        the dtype; a feed-forward target keeps its input, cast to the vectors' fp32."""
        targets, feedforward = self._targets(plan, d)
        return ActivationTerms(per_token=sum(4 * i if n in feedforward else e * o for n, (i, o) in targets.items()))

    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        yield from super().checks(spec, facts)
        arch = model_type(facts)
        if arch is None:
            return  # facts unknown offline: PEFT checks at run time
        known, targets = LINEAR_MODULES.get(arch), self.target_modules
        if known and isinstance(targets, list):
            yield from module_list_problems("method.target_modules", targets, known, arch)
        if isinstance(self.feedforward_modules, list):
            if not isinstance(targets, list):
                yield "method.feedforward_modules", "an explicit feedforward_modules list needs an explicit target_modules list"
            else:
                for name in self.feedforward_modules:
                    if name not in targets:
                        yield "method.feedforward_modules", f"{name!r} is not one of method.target_modules; add it there"
        if targets == "auto" and arch not in IA3_DEFAULTS:
            yield "method.target_modules", (f"PEFT has no default IA3 targets for {arch} models; list them, "
                                            f"e.g. target_modules = [\"{(known or ('k_proj',))[0]}\", ...]")

    @classmethod
    def imports(cls) -> Imports:
        return Imports(peft=("IA3Config", "get_peft_model"))


class LlamaAdapter(MethodBase):
    """`kind = "llama_adapter"`: LLaMA-Adapter (adapter tuning): trained adaption prompts on the
    top `layers` attention layers, mixed in through gates that start at zero, so training starts
    from the unchanged model. Llama and Mistral architectures; unquantized bases only."""

    kind: Literal["llama_adapter"] = "llama_adapter"
    """Method selector."""
    adapter_len: int = Field(10, gt=0, le=1024)
    """Length of the adaption prompt of each adapted layer (the paper uses 10)."""
    layers: int = Field(8, gt=0, le=10_000)
    """How many of the top layers get an adaption prompt (at most the model's depth)."""
    adapter_name: str | None = AdapterName
    """Name of the adapter (default: PEFT's "default"); a named adapter is saved in `final/<name>/`."""

    template: ClassVar[str] = "llama_adapter"
    title: ClassVar[str] = "LLaMA-Adapter (gated adaption prompts)"
    default_learning_rate: ClassVar[float] = 9e-3
    """The LLaMA-Adapter paper uses 9e-3."""
    trains_in_load_dtype: ClassVar[bool] = True
    """PEFT makes the adaption prompts and gates in the base's dtype (measured: bf16 under a bf16 base)."""
    trainer: ClassVar[Literal["sft", "hf"]] = "hf"
    peft: ClassVar[bool] = True
    config_names: ClassVar[dict[str, str]] = {"layers": "ADAPTER_LAYERS"}
    sharding_problem: ClassVar[str] = (
        "PEFT's AdaptedAttention calls the wrapped attention's k/v projections on the adaption prompt outside "
        "their sharded forward, so FSDP/ZeRO-3 hand it unallocated weights (llama-cookbook#359: llama_adapter "
        "fails under FSDP); it trains few parameters, so use strategy = \"ddp\" (or \"zero2\")")

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """An adaption prompt and a scalar gate per adapted layer."""
        return plan["layers"] * (self.adapter_len * d.h + 1)

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """Without checkpointing the blocks below the adapted ones run without autograd; each adapted
        block keeps a frozen block's tensors plus its adaption attention's (peft
        tuners/adaption_prompt/layer.py): the recomputed rotated queries (kept by the product with
        the prompt's keys), the fp32 softmax over the prompt, the gated scores, and nothing of the
        frozen o_proj. The lowest adapted block's own attention and input norm see no grad-requiring
        input."""
        layers = min(plan["layers"], d.layers)
        return ActivationTerms(per_token=e * d.q_dim + (4 + e) * d.heads * self.adapter_len, autograd_blocks=layers,
                               untracked_per_token=4 * d.h + e * (d.q_dim + 2 * d.kv_dim + d.q_dim) + 4 * d.heads,
                               why=f"activations: the {layers} adapted blocks only")

    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        yield from super().checks(spec, facts)
        arch = model_type(facts)
        if arch is not None and arch not in LLAMA_ADAPTER_MODEL_TYPES:
            yield "method.kind", (f"LLaMA-Adapter supports {' and '.join(LLAMA_ADAPTER_MODEL_TYPES)} models, not "
                                  f"{arch}; use kind = \"prefix\" (adapters at every layer) or \"lora\"")

    @classmethod
    def imports(cls) -> Imports:
        return Imports(peft=("AdaptionPromptConfig", "get_peft_model"))
