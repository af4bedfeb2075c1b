"""The memory-relevant choices: the fastest micro-batch and checkpointing pair whose estimated peak
fits the budget (compiler/estimate.py), and, when nothing fits, what would."""

from __future__ import annotations

from dataclasses import dataclass

from ftc.core.errors import BudgetError
from ftc.compiler.estimate import Memory, RunShape, estimate_memory
from ftc.compiler.methods import MethodPlan
from ftc.compiler.spec import Spec

# Keep the estimated peak this far under the budget: allocator fragmentation under variable
# sequence lengths adds 5-20 % of reserved over allocated memory (MEMORY.md, pitfall 10).
SAFETY_MARGIN = 0.10
# Relative step throughput of gradient checkpointing: one extra forward of every block
# (~4/3 of the compute; Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost").
CHECKPOINTING_SPEED = 0.75


@dataclass(frozen=True)
class BatchChoice:
    """The memory-relevant settings the planner picked, with the estimate that justified them."""

    micro: int
    checkpointing: bool
    optimizer: str
    memory: Memory | None
    why_micro: str
    why_checkpointing: str
    why_optimizer: str


def _throughput(device: str, tokens: int, checkpointing: bool) -> float:
    """Relative tokens/s of a micro-batch: small batches leave the device idle. Saturates around
    2k tokens per step on a GPU and ~128 on a CPU (measured: benchmarks/README.md)."""
    saturation = 2048 if device == "cuda" else 128
    return tokens / (tokens + saturation) * (CHECKPOINTING_SPEED if checkpointing else 1.0)


def shape_for(spec: Spec, config: dict[str, object], *, micro: int, checkpointing: bool, dtype: str,
              optimizer: str, grad_accum: int, seq_len: int | None = None,
              method: MethodPlan | None = None) -> RunShape:
    """The RunShape of the script this spec emits, for one candidate setting (`method`: another
    method resolved for the model, default the spec's)."""
    method = method or spec.method.resolve(config)
    return RunShape(
        config=config, method=method, micro_batch=micro, seq_len=seq_len or spec.data.max_length,
        gradient_checkpointing=checkpointing, dtype=dtype, optimizer=optimizer, device=spec.hardware.device,
        padded=micro > 1, grad_accum=grad_accum, loss="trl" if method.method.trainer == "sft" else "hf")


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def choose_batch(spec: Spec, config: dict[str, object] | None, dtype: str, budget_gib: float | None,
                 per_device: int, seq_len: int | None = None) -> BatchChoice:
    """The fastest micro-batch / checkpointing pair whose estimated peak fits the budget. `seq_len`:
    the longest padded row a step sees (default data.max_length; see `sequence_length`)."""
    t, device = spec.train, spec.hardware.device
    optimizer = "adamw_torch_fused" if device == "cuda" else "adamw_torch"
    micros = [d for d in range(per_device, 0, -1) if per_device % d == 0]
    if isinstance(t.micro_batch_size, int):
        micros = [t.micro_batch_size]
    flags = [False, True] if t.gradient_checkpointing == "auto" else [bool(t.gradient_checkpointing)]
    if not spec.method.checkpointing_ok:
        flags = [False]  # run_checks refused an explicit true
    forced = "spec: train.micro_batch_size" if isinstance(t.micro_batch_size, int) else None
    forced_gc = "spec: train.gradient_checkpointing" if t.gradient_checkpointing != "auto" else None
    if config is None:  # no facts to estimate from: the simplest safe rules
        cap = 8 if device == "cpu" else 4
        micro = micros[0] if forced else max(d for d in micros if d <= cap)
        gc = flags[0] if forced_gc else device == "cuda"
        return BatchChoice(micro, gc, optimizer, None,
                           forced or f"planned: largest divisor of {per_device} not above {cap} (model size "
                           "unknown offline, so no estimate)",
                           forced_gc or ("planned: the model size is unknown offline" if gc
                                         else "planned: cpu, where memory is rarely the limit"),
                           _why_optimizer(optimizer))
    limit = budget_gib * 2**30 * (1 - SAFETY_MARGIN) if budget_gib else None
    # 8-bit AdamW (bitsandbytes, CUDA only) quarters the optimizer states; used only when the fused
    # fp32 AdamW cannot fit, since it is slightly slower and quantizes the moments.
    optimizers = [optimizer] + (["adamw_bnb_8bit"] if device == "cuda" else [])
    for optimizer in optimizers:
        candidates = []
        for micro in micros:
            for gc in flags:
                shape = shape_for(spec, config, micro=micro, checkpointing=gc, dtype=dtype, optimizer=optimizer,
                                  grad_accum=per_device // micro, seq_len=seq_len)
                memory = estimate_memory(shape)
                tokens = micro * (seq_len or int(spec.data.max_length))
                candidates.append((_throughput(device, tokens, gc), micro, gc, memory))
        fitting = [c for c in candidates if limit is None or c[3].total <= limit]
        if fitting:
            break
    else:
        raise BudgetError(_no_fit_message(spec, config, dtype, budget_gib, candidates, forced or forced_gc))
    _, micro, gc, memory = max(fitting, key=lambda c: (c[0], -c[3].total))
    if limit:
        budget = f"under {gib(limit)} ({budget_gib:g} GiB less {SAFETY_MARGIN:.0%} margin)"
        why_micro = forced or (f"planned: the fastest divisor of {per_device} whose estimated peak "
                               f"{gib(memory.total)} stays {budget}")
    else:
        why_micro = forced or (f"planned: the fastest divisor of {per_device} (estimated peak {gib(memory.total)}; "
                               "no budget set)")
    if forced_gc:
        why_gc = forced_gc
    elif gc:
        why_gc = "planned: without it no micro-batch fits the budget" if not any(
            not c[2] for c in fitting) else "planned: a larger micro-batch fits with it (faster overall)"
    else:
        why_gc = "planned: the run fits without it (faster)"
    return BatchChoice(micro, gc, optimizer, memory, why_micro, why_gc, _why_optimizer(optimizer))


def _why_optimizer(optimizer: str) -> str:
    if "8bit" in optimizer:
        return "planned: 8-bit AdamW (bitsandbytes), since fp32 AdamW states do not fit"
    if optimizer.endswith("fused"):
        return "planned: fused AdamW on cuda (no foreach temporaries)"
    return "planned: AdamW (fused kernels are for cuda)"


def _no_fit_message(spec: Spec, config: dict[str, object], dtype: str, budget_gib: float | None,
                    candidates: list[tuple[float, int, bool, Memory]], forced: str | None) -> str:
    smallest = min(candidates, key=lambda c: c[3].total)
    _, micro, gc, memory = smallest
    limit = (budget_gib or 0) * 2**30 * (1 - SAFETY_MARGIN)
    lines = [f"the run does not fit: the smallest setting (micro-batch {micro}, gradient checkpointing "
             f"{'on' if gc else 'off'}) needs an estimated {gib(memory.total)}, {gib(memory.total - limit)} over "
             f"the budget of {budget_gib:g} GiB less a {SAFETY_MARGIN:.0%} margin ({gib(limit)})",
             "  " + ", ".join(f"{k} {gib(v)}" for k, v in memory.as_dict().items() if v and k != "total")]
    if forced:
        lines.append(f"  {forced.split(': ')[1]} is set in the spec; \"auto\" lets the planner search")
    options = []
    for lighter in spec.method.alternatives():
        shape = shape_for(spec, config, micro=1, checkpointing=True, dtype=dtype, optimizer="adamw_torch_fused",
                          grad_accum=1, method=lighter.resolve(config))
        total = estimate_memory(shape).total
        if total <= limit:
            options.append(f"method.kind = \"{lighter.kind}\" (estimated {gib(total)})")  # type: ignore[attr-defined]
    length = spec.data.max_length
    while length > 64:
        length //= 2
        shape = shape_for(spec, config, micro=1, checkpointing=True, dtype=dtype, optimizer="adamw_torch_fused",
                          grad_accum=1, seq_len=length)
        total = estimate_memory(shape).total
        if total <= limit:
            options.append(f"data.max_length = {length} (estimated {gib(total)})")
            break
    needed = memory.total / (1 - SAFETY_MARGIN) / 2**30
    options.append(f"a device with at least {needed:,.1f} GiB (hardware.vram_gb)")
    lines.append("  what would fit: " + "; or ".join(options))
    return "\n".join(lines)


