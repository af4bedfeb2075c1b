"""How long a step takes on a GPU: FLOPs per trained token of the architecture and the method, over
the GPU's dense peak times an assumed utilisation (MFU). docs/time-model.md explains each term.

FLOPs per token, with N_m the parameters of the matrix multiplies (every linear layer of the blocks
and the LM head; the embedding lookup is free), N_a the method's added parameters (LoRA's A and B,
IA3's vectors; 0 for methods that train the base) and N_t the trainable ones:
  forward            2 (N_m + N_a) + 2 L s d      (Kaplan et al. 2020, "Scaling Laws for Neural
                                                  Language Models", Table 1: 2N plus attention's
                                                  2 n_layer n_ctx d_attn per token)
  activation grads   the same again               (the backward of a matmul is two matmuls of its
                                                  forward's size: one for the input's gradient ...)
  weight grads       2 N_t                        (... one for the weight's, only where it trains)
  recompute          one more forward with gradient checkpointing (Chen et al. 2016)
Full fine-tuning is then 6 N_m per token, Kaplan's C = 6 N D; a frozen-base adapter method about
4 N_m plus its adapter terms (the LoRA paper, Hu et al. 2021, Section 4.2, reports 25 % faster
steps than full fine-tuning on GPT-3 175B for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from ftc.compiler.catalog import Gpu
from ftc.compiler.estimate import dims, parameter_counts
from ftc.compiler.methods import MethodPlan

# Model FLOPs utilisation assumed on a GPU: the share of the dense bf16/fp16 peak a fine-tuning
# step reaches. Tuned large-scale pretraining reaches 38-43 % (Llama 3 on H100, "The Llama 3 Herd
# of Models", 2024, Table 4) to 46 % (PaLM on TPU v4, Chowdhery et al. 2022, Table 3); a
# single-node Trainer run with padded micro-batches is below that, so 35 % is assumed. Models under
# ~1B parameters use the tensor cores less well: their times are optimistic.
GPU_MFU = 0.35
# 4-bit NF4 bases dequantize every weight in each forward and backward (bitsandbytes): QLoRA ran
# 39 % longer than LoRA for 33 % less memory in S. Raschka, "Practical Tips for Finetuning LLMs
# Using LoRA" (Ahead of AI, 2023). LLM.int8 has no comparable published training figure: no factor.
QUANT_SLOWDOWN = {"nf4": 1.39}


@dataclass(frozen=True)
class StepTime:
    """The estimated time of one optimizer step, and how it was reached."""

    seconds: float
    flops_per_token: float
    tokens_per_step: int
    why: str


def flops_per_token(config: dict[str, object], method: MethodPlan, seq_len: int,
                    checkpointing: bool) -> tuple[float, str]:
    """Training FLOPs per token (see the module docstring) and the formula with its numbers."""
    d = dims(config)
    counts = parameter_counts(d)
    matmul = counts["linear"] + d.vocab * d.h  # the head multiplies even when tied to the embedding
    trainable = method.trainable_parameters(d)
    added = 0 if method.trains_base_weights else trainable
    forward = 2 * (matmul + added) + 2 * d.layers * seq_len * d.h
    total = 2 * forward + 2 * trainable + (forward if checkpointing else 0)
    why = (f"{total / matmul:.1f} N per token (N = {matmul / 1e9:,.2f}B matmul parameters, "
           f"{trainable / 1e6:,.1f}M trainable{', checkpointing recomputes the forward' if checkpointing else ''})")
    return float(total), why


def gpu_step_time(gpu: Gpu, precision: str, flops_token: float, tokens: int, quantization: str | None,
                  devices: int = 1) -> StepTime | None:
    """Seconds per optimizer step of `tokens` tokens (all devices together), data parallel with no
    communication cost; None for fp32, whose rate the catalog does not hold."""
    if precision not in ("bf16", "fp16"):
        return None
    peak = gpu.peak_tflops_bf16 if precision == "bf16" else gpu.peak_tflops_fp16
    slowdown = QUANT_SLOWDOWN.get(quantization or "", 1.0)
    seconds = flops_token * tokens * slowdown / (devices * peak * 1e12 * GPU_MFU)
    why = (f"{flops_token * tokens / 1e12:,.1f} TFLOP per step / ({devices} x {peak:g} TFLOPS {precision} peak "
           f"x {GPU_MFU:.0%} MFU)" + (f" x {slowdown} for {quantization} dequantization" if slowdown != 1 else "")
           + ("; LLM.int8's own overhead is not modelled (slower)" if quantization == "int8" else ""))
    return StepTime(seconds, flops_token, tokens, why)


def duration(seconds: float | None) -> str:
    """A time for a table: 0.42 s, 42 s, 10.0 min, 2.5 h, 3.2 d."""
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.0f} s"
    for limit, unit, scale in ((7200, "min", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds / 86400:.1f} d"
