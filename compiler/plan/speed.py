"""Padding-free micro-batches, chosen when the measured length spread makes them faster.

A padded micro-batch of B examples runs B x (its longest example) positions; a padding-free one
runs one row of the B examples end to end (positions restart per example, so each attends only to
itself) and the same rows, steps and loss. What it costs instead: without a varlen attention kernel
the row's attention is one (sum of lengths)^2 block-diagonal product (SDPA); FlashAttention-2's varlen
kernel attends within each example (compiler/plan/kernels.py chooses it). The planner compares the two
with the usual per-token cost, 6 x parameters for the matrix products plus 12 x layers x hidden x
context for attention (Kaplan et al. 2020, as nanoGPT's estimate_mfu writes it), over micro-batches
drawn from the lengths measured at compile time, and turns padding-free on when it saves at least
MIN_SAVING. Packing is never chosen for the user: it changes how many examples a step holds (so the
planned steps, epochs and learning-rate schedule), which is the spec's decision, not a speed-up.
"""

from __future__ import annotations

from typing import Any

from ftc.compiler.plan.types import Setting
from ftc.compiler.spec import Spec
from ftc.compiler.tokens import TokenFacts

MIN_SAVING = 0.15  # below this the gain is within the noise of a CPU step (benchmarks/throughput.py)


def expected_longest(lengths: tuple[int, ...], batch: int) -> float:
    """The mean longest length of `batch` examples drawn at random (with replacement) from `lengths`
    (sorted): P(longest <= l_i) = (i / n) ** batch."""
    n = len(lengths)
    return sum(length * ((i / n) ** batch - ((i - 1) / n) ** batch) for i, length in enumerate(lengths, 1))


def step_costs(lengths: tuple[int, ...], batch: int, params: int, layers: int, hidden: int,
               varlen: bool = False) -> tuple[float, float]:
    """(padded, padding-free) FLOPs of a micro-batch's forward, as 6N per position + 12 L H T attention.
    `varlen`: FlashAttention-2 runs the padding-free row per example (TRL's cu_seq_lens), each attending over
    its own length, not the row's; SDPA masks the whole row's square."""
    longest, mean = expected_longest(lengths, batch), sum(lengths) / len(lengths)
    padded = batch * longest * (6 * params + 12 * layers * hidden * longest)
    row = batch * mean
    if varlen:
        return padded, row * 6 * params + batch * 12 * layers * hidden * sum(n * n for n in lengths) / len(lengths)
    return padded, row * (6 * params + 12 * layers * hidden * row)


def padding_free_choice(spec: Spec, tokens: TokenFacts | None, config: dict[str, Any] | None, params: int | None,
                        micro_batch: int, max_length: int, attention: str = "sdpa") -> Setting[bool]:
    """data.padding_free: the spec's value when it sets it (or packs), else planned from the lengths."""
    d = spec.data
    if "padding_free" in d.model_fields_set or d.packing:
        return Setting(d.padding_free, "spec: data.padding_free" if "padding_free" in d.model_fields_set
                       else "derived: packed rows are padding-free already")
    if spec.train.objective != "sft":
        return Setting(False, "derived: the preference trainers pad chosen and rejected rows themselves")
    if spec.method.trainer == "hf":
        return Setting(False, "derived: this method's virtual tokens need padded rows")
    if micro_batch < 2:
        return Setting(False, "planned: a micro-batch of 1 has no padding")
    if tokens is None or not tokens.lengths or not config or not params:
        return Setting(False, "planned: token lengths or the model's size are not known at compile time")
    lengths = tuple(min(n, max_length) for n in tokens.lengths)
    layers, hidden = int(config.get("num_hidden_layers", 0)), int(config.get("hidden_size", 0))
    varlen = attention == "flash_attention_2"
    padded, free = step_costs(lengths, micro_batch, params, layers, hidden, varlen)
    saving = 1 - free / padded
    pad_share = 1 - (sum(lengths) / len(lengths)) / expected_longest(lengths, micro_batch)
    measured = (f"measured: micro-batches of {micro_batch} would be {pad_share:.0%} padding "
                f"(lengths p50 {tokens.p50}, p95 {tokens.p95}, max {tokens.max})")
    if saving >= MIN_SAVING:
        kernel = " (FlashAttention-2 attends within each example)" if varlen else ""
        return Setting(True, f"planned: {measured}; one padding-free row saves ~{saving:.0%} of a step's "
                             f"compute{kernel} and trains the same rows")
    return Setting(False, f"planned: {measured}; padding-free would save ~{max(saving, 0):.0%} of a step's "
                          f"compute (turned on from {MIN_SAVING:.0%})")
