"""The loss's vocabulary-wide memory at the peak of a step (part of compiler/estimate.py; pure, no torch).

`e` is the compute dtype's bytes per entry, `tokens` the positions of a micro-batch (soft prompts included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ftc.compiler.estimate_preference import FULL_LOGITS, full_logits_bytes

if TYPE_CHECKING:
    from ftc.compiler.estimate import Dims, RunShape

# Vocab-wide bytes per token at the start of backward: logits, fp32 copy, log-softmax, gradient
# (measured on CPU for fp32 and bf16 alike: benchmarks/README.md).
LOGITS_BYTES_PER_ENTRY = 12

# TRL's fused LM head tiles (trl 1.16 trl/kernels/chunked_logprob.py TOKEN_CHUNK_SIZE and
# trainer/utils.py _CHUNKED_LOGPROB_CHUNK_SIZE). Its projection buffer `mm_buf` is always
# TRL_VOCAB_CHUNK wide, even for a smaller vocabulary (64 MiB at 508 positions and a 4,096 vocab:
# the tiny models' constant miss, benchmarks/README.md).
TRL_TOKEN_CHUNK = 4096
TRL_VOCAB_CHUNK = 32768
# Bytes per entry of one tile (positions x min(vocab, chunk)) that the CPU backward's torch ops keep
# beside mm_buf (trl _backward_tile): 7 fp32 tiles (2 x mul, 2 x sub, 2 x empty_strided, exp) and
# the bool target mask. Measured on the emitted scripts (benchmarks/memory.py): 7 x 4 + 1.
TRL_CPU_BYTES_PER_TILE_ENTRY = 29


def logits_bytes(shape: RunShape, d: Dims, e: int, tokens: int) -> int:
    """Vocab-wide memory of the loss.

    "hf": the logits, their fp32 upcast (a copy unless already fp32), the log-softmax that
    cross_entropy keeps and the gradient being formed (transformers loss_utils.ForCausalLMLoss).

    "kept": ftc.runtime.lmhead, the same entries as "hf" for the positions whose label is kept: the
    head's output in the compute dtype, its fp32 copy, the log-softmax and its gradient (estimated for
    every position, an upper bound: the kept share is not measured at compile time).

    "trl": TRL's fused LM head never builds the whole logits, only tiles (see the TRL_* constants);
    with Triton (CUDA) the fold runs in place (estimated, not yet measured on a GPU: mm_buf plus one
    fp32 tile). The backward also accumulates an fp32 gradient of the hidden states, and of the
    head's weight when it trains (full fine-tuning).
    """
    if shape.loss == "hf":
        if shape.objective in FULL_LOGITS:
            return full_logits_bytes(shape, d, e)
        return tokens * d.vocab * LOGITS_BYTES_PER_ENTRY
    if shape.loss == "kept":  # as "hf" over the kept positions, every position at most (the share is not known)
        return tokens * d.vocab * LOGITS_BYTES_PER_ENTRY
    positions = shape.micro_batch * max(1, shape.seq_len - 1)
    rows = min(positions, TRL_TOKEN_CHUNK)
    tile = rows * min(d.vocab, TRL_VOCAB_CHUNK)
    per_entry = TRL_CPU_BYTES_PER_TILE_ENTRY if shape.device == "cpu" else 4
    buffer = rows * TRL_VOCAB_CHUNK * e  # mm_buf, in the compute dtype
    head_grad = d.vocab * d.h * 4 if shape.terms.head_trains else 0
    return buffer + tile * per_entry + positions * d.h * 4 + head_grad
