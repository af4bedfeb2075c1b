"""The optimisation values a spec leaves out: effective batch, epochs, learning rate, warmup and schedule.

Each rule reads the model (width), the method (its update scale), the data (training rows after cleaning and
the held-out share, tokens per example) and gives a reason that names its source. Batch and epochs are
chosen together so a small data set still gets enough optimizer steps. A value the spec sets is kept as is.

Measured on the bundled SmolLM2-135M (hidden 576), LoRA r8: the old fixed defaults (batch 16, 3 epochs,
2e-4) reached 90 % held-out exact match on a 260-row task where batch 8 and 2e-3 reached 100 % (issue 17);
benchmarks/quality/ records the five tasks these rules are checked on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ftc.compiler.spec import Spec
from ftc.compiler.tokens import TokenFacts

REFERENCE_WIDTH = 4096
"""Hidden size the methods' default learning rates are quoted at (7B Llama/Mistral; the seeds' ranges)."""
REFERENCE_SCALE = 2.0
"""LoRA's alpha / r in those quotes (r 8, alpha 16: PEFT's and the seeds' usual pair)."""
STEPS_PER_EPOCH = 24
"""Optimizer steps per epoch the batch aims at, so three epochs give ~70 updates."""
MIN_STEPS = 50
"""Fewest optimizer steps a run plans by epochs: fewer leave an adapter under-trained after warmup and decay."""
MAX_EPOCHS = 10
"""The seeds' range is 1-10 epochs."""
LARGE_ROWS = 20_000
"""From this many training rows one epoch is planned (every example is seen once; more overfits and costs)."""
TOKENS_PER_STEP = 32_768
"""Most tokens an effective batch aims at: long examples carry more signal each, so fewer go in a batch."""


@dataclass(frozen=True)
class Hyper:
    """The chosen values, each with its reason (the OptimPlan's Settings are built from these)."""

    batch_size: tuple[int, str]
    epochs: tuple[float | None, str]
    learning_rate: tuple[float, str]
    warmup: tuple[float, str]
    scheduler: tuple[str, str]


def _pow2(x: float) -> int:
    return 2 ** max(0, round(math.log2(max(x, 1.0))))


def plan_batch(spec: Spec, rows: int | None, tokens: TokenFacts | None) -> tuple[int, str]:
    """The effective batch: a power of two giving ~STEPS_PER_EPOCH steps per epoch, 4 to 32, fewer for long rows."""
    t, world = spec.train, spec.hardware.world
    if "batch_size" in t.model_fields_set:
        return t.batch_size, "spec: train.batch_size"
    unit = world * (t.micro_batch_size if isinstance(t.micro_batch_size, int) else 1)
    if rows is None:
        value, why = 16, "planned: 16, the seeds' usual batch (the number of rows is unknown at compile time)"
    else:
        value = min(32, max(4, _pow2(rows / STEPS_PER_EPOCH)))
        why = f"planned: {rows} rows / ~{STEPS_PER_EPOCH} steps per epoch (a power of two, 4 to 32)"
        if tokens is not None and value * tokens.p50 > TOKENS_PER_STEP:
            value = max(4, 2 ** int(math.log2(TOKENS_PER_STEP / tokens.p50)))
            why += f"; ~{TOKENS_PER_STEP:,} tokens per step at most (p50 {tokens.p50} per example)"
    if value % unit:
        value = -(-value // unit) * unit
        why += f"; a multiple of {unit} (devices x micro-batch)"
    return value, why


def plan_epochs(spec: Spec, rows: int | None, batch: int) -> tuple[float, str]:
    """Passes over the data: 3, more for a small set (at least MIN_STEPS updates, 10 epochs at most), 1 for a large."""
    t = spec.train
    if t.epochs is not None:
        return t.epochs, "spec: train.epochs"
    if rows is None:
        return 3.0, "planned: 3, the seeds' usual number (the number of rows is unknown at compile time)"
    if rows >= LARGE_ROWS:
        return 1.0, f"planned: 1 pass over {rows:,} training rows (from {LARGE_ROWS:,} rows every example once)"
    per_epoch = math.ceil(rows / batch)
    if per_epoch * 3 >= MIN_STEPS:
        return 3.0, f"planned: 3 (seeds: 1-10), {per_epoch * 3} steps"
    epochs = min(MAX_EPOCHS, math.ceil(MIN_STEPS / per_epoch))
    return float(epochs), f"planned: {per_epoch * epochs} steps for {rows} rows (at least {MIN_STEPS}, {MAX_EPOCHS} epochs at most)"


def plan_learning_rate(spec: Spec, config: dict[str, Any] | None,
                       measured: tuple[float, str] | None = None) -> tuple[float, str]:
    """The method's 7B rate, times 4096 / hidden for matrices trained with Adam (muP: Yang et al. 2022, Tensor
    Programs V, the Adam rate of hidden matrices scales as 1/width), divided by LoRA's update scale over 2 (Adam's
    step on B is about lr per entry whatever alpha is, so the update of W grows with alpha / r).
    `learning_rate = "auto"`: `measured` (the range test's pick, ftc.compiler.lrauto), else this rule."""
    method = spec.method
    if spec.train.learning_rate == "auto" and measured is not None:
        return measured
    if isinstance(spec.train.learning_rate, float):
        return spec.train.learning_rate, "spec: train.learning_rate"
    base = method.default_learning_rate
    hidden = (config or {}).get("hidden_size")
    if not method.width_scaled_lr:
        return base, f"planned: {method.kind}'s default (vectors or tokens, no width rule)"
    if not isinstance(hidden, int) or hidden <= 0:
        return base, f"planned: {method.kind}'s 7B default (the model's width is unknown)"
    width = min(8.0, max(0.25, REFERENCE_WIDTH / hidden))
    why = f"planned: {method.kind}'s {base:g} at hidden {REFERENCE_WIDTH} x {width:.3g} for hidden {hidden} (1/width, muP)"
    scale, value = method.update_scale(), base * width
    if scale is not None and scale != REFERENCE_SCALE:
        factor = min(4.0, max(0.25, REFERENCE_SCALE / scale))
        value *= factor
        why += f" x {factor:.3g} for an update scale of {scale:.3g}, not {REFERENCE_SCALE:g}"
    value = float(f"{value:.2g}")
    return value, why


def plan_warmup(spec: Spec, total_steps: int | None) -> tuple[float, str]:
    """5 % of the steps (the seeds' 5-10 %), at least 3 steps of a short run (Adam's first moment estimates
    settle before the peak rate), 10 % at most."""
    t = spec.train
    if t.scheduler == "constant" and "scheduler" in t.model_fields_set:
        return 0.0, "derived: the constant schedule has no warmup"
    if "warmup" in t.model_fields_set:
        return t.warmup, "spec: train.warmup"
    if not total_steps:
        return 0.05, "planned: 5 % of the steps (seeds: 5-10 %)"
    value = round(min(0.1, max(0.05, 3 / total_steps)), 3)
    return value, f"planned: {value:.1%} of {total_steps} steps (seeds: 5-10 %; 3 steps at least)"


def plan_scheduler(spec: Spec) -> tuple[str, str]:
    if "scheduler" in spec.train.model_fields_set:
        return spec.train.scheduler, "spec: train.scheduler"
    return "cosine", "planned: cosine decay (the seeds' schedule)"


def choose(spec: Spec, rows: int | None, tokens: TokenFacts | None, config: dict[str, Any] | None,
           measured_lr: tuple[float, str] | None = None) -> Hyper:
    """Every optimisation value the spec leaves out (rows: the training rows the plan counts, or None;
    measured_lr: the range test's rate for `learning_rate = "auto"`)."""
    batch = plan_batch(spec, rows, tokens)
    if spec.train.max_steps is not None:
        epochs: tuple[float | None, str] = (None, "spec: train.max_steps overrides epochs")
        steps: int | None = spec.train.max_steps
    else:
        passes, why = plan_epochs(spec, rows, batch[0])
        epochs, steps = (passes, why), math.ceil(math.ceil(rows / batch[0]) * passes) if rows else None
    return Hyper(batch_size=batch, epochs=epochs, learning_rate=plan_learning_rate(spec, config, measured_lr),
                 warmup=plan_warmup(spec, steps), scheduler=plan_scheduler(spec))
