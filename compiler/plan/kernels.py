"""The CUDA kernels a run uses: the attention implementation and Liger's layer kernels, each with its reason.

Both are chosen only where the package is installed where the run trains (compiler/host.py reads the
distributions without importing them), and the emitted train.py checks at start that it imports, failing
with what to install or recompile (ftc.runtime.kernels).

Attention: transformers 5 loads `sdpa` (PyTorch's scaled dot product attention) by default. FlashAttention-2
(`flash_attention_2`, the flash-attn package) needs an Ampere or newer GPU and bf16/fp16 inputs; padded
batches are unpadded into its varlen kernel, and padding-free rows pass TRL's cu_seq_lens / position_ids
to it, so neither materialises a mask nor repeats K/V per query head (the estimate follows:
compiler/estimate.py). Where the model type's transformers class supports it (`_supports_flash_attn`,
read from transformers 5.24's modeling files: FLASH_MODEL_TYPES), it is chosen.

Liger (liger-kernel): TRL 1.16's SFTTrainer applies only its layer kernels (RMSNorm, RoPE, SwiGLU) and turns
its fused linear cross-entropy off, since TRL's own fused LM head already computes the loss without the
full logits (sft_trainer.py, `use_liger_kernel`); transformers' Trainer applies them to the base model under
a PEFT wrapper (integrations/liger.py). The preference trainers read `use_liger_kernel` as their own Liger
loss, and a Trainer-based method (prompt learning) would get the fused cross-entropy patched into the
model's forward: neither is planned. The layer kernels keep fewer activations than the estimate counts
(it counts PyTorch's norms and MLP), so the estimate is an upper bound with them.
"""

from __future__ import annotations

from typing import Any

from ftc.compiler.catalog import find_gpu
from ftc.compiler.host import HostFacts
from ftc.compiler.plan.types import Setting
from ftc.compiler.spec import Spec

SDPA, FLASH = "sdpa", "flash_attention_2"
FLASH_PACKAGE, LIGER_PACKAGE = "flash-attn", "liger-kernel"

# model_type -> transformers 5.24 sets `_supports_flash_attn = True` on its PreTrainedModel (models/*/modeling_*.py)
FLASH_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                               "phi", "phi3", "gpt2"})
# model_type -> liger_kernel.transformers.monkey_patch.MODEL_TYPE_TO_APPLY_LIGER_FN has an entry (checked against
# linkedin/Liger-Kernel ead96b6, 2026-08-21; the dict there has more types, these are the ones ftc's catalog uses)
LIGER_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                               "phi3"})


def attention_choice(spec: Spec, host: HostFacts, precision: str, config: dict[str, Any] | None) -> Setting[str]:
    """hardware.attention: the spec's, else flash_attention_2 where it is installed and compatible, else sdpa."""
    hw = spec.hardware
    if hw.attention != "auto":
        return Setting(hw.attention, "spec: hardware.attention")
    if hw.device != "cuda":
        return Setting(SDPA, "derived: PyTorch's scaled dot product attention (FlashAttention-2 is for CUDA)")
    why_not = _flash_obstacle(spec, host, precision, config)
    if why_not:
        return Setting(SDPA, f"planned: PyTorch's scaled dot product attention; not FlashAttention-2: {why_not}")
    return Setting(FLASH, f"planned: FlashAttention-2 ({FLASH_PACKAGE} in {host.packages_source}; "
                          f"{precision}, {config['model_type'] if config else ''} supports it): no attention mask "
                          "nor K/V repeated per query head, padded rows unpadded into its varlen kernel")


def _flash_obstacle(spec: Spec, host: HostFacts, precision: str, config: dict[str, Any] | None) -> str | None:
    """Why FlashAttention-2 cannot be planned (None: it can)."""
    if FLASH_PACKAGE not in host.packages:
        return f"{FLASH_PACKAGE} is not installed ({host.packages_source})"
    if spec.method.trainer == "hf":
        return "ftc has not checked it with this method's virtual tokens (PEFT's prompt learning)"
    if precision not in ("bf16", "fp16"):
        return f"it computes in bf16/fp16 only (precision {precision})"
    gpu = find_gpu(spec.hardware.gpu) if spec.hardware.gpu else None
    if gpu is not None and not gpu.bf16:
        return f"the {gpu.name} is older than Ampere"
    model_type = (config or {}).get("model_type")
    if model_type is None:
        return "the model type is not known at compile time"
    if model_type not in FLASH_MODEL_TYPES:
        return f"ftc has not checked transformers' FlashAttention-2 support for model type {model_type!r}"
    return None


def liger_choice(spec: Spec, host: HostFacts, config: dict[str, Any] | None) -> Setting[bool]:
    """hardware.liger: the spec's, else on where liger-kernel is installed and its layer kernels apply."""
    hw = spec.hardware
    if hw.liger != "auto":
        return Setting(bool(hw.liger), "spec: hardware.liger")
    if hw.device != "cuda":
        return Setting(False, "derived: Liger's kernels are Triton kernels for CUDA")
    if spec.train.objective != "sft":
        return Setting(False, "derived: the preference trainers read use_liger_kernel as their own Liger loss")
    if spec.method.trainer != "sft":
        return Setting(False, "derived: through Trainer Liger would patch its fused cross-entropy into the "
                              "model's forward, which this method's virtual tokens go through")
    if LIGER_PACKAGE not in host.packages:
        return Setting(False, f"planned: {LIGER_PACKAGE} is not installed ({host.packages_source})")
    model_type = (config or {}).get("model_type")
    if model_type not in LIGER_MODEL_TYPES:
        return Setting(False, f"planned: Liger has no kernels for model type {model_type!r}" if model_type
                       else "planned: the model type is not known at compile time")
    return Setting(True, f"planned: Liger's RMSNorm, RoPE and SwiGLU kernels ({LIGER_PACKAGE} in "
                         f"{host.packages_source}); its fused cross-entropy stays off, TRL's fused head computes "
                         "the loss without full logits; the memory estimate counts PyTorch's layers (an upper bound)")
