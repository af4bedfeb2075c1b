"""The memory-relevant choices: the fastest micro-batch and checkpointing pair whose estimated peak
fits the budget (compiler/estimate.py), and, when nothing fits, what would."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from ftc.core.errors import BudgetError
from ftc.compiler.estimate import Memory, RunShape, estimate_memory
from ftc.compiler.estimate_preference import without_dropout
from ftc.compiler.estimate_shard import Loading, Parallel
from ftc.compiler.strategy import AUTO_ORDER, OFFLOAD_LEVEL, candidates, incompatible
from ftc.compiler.methods import MethodPlan
from ftc.compiler.plan.lmhead import KEPT, lm_head_choice
from ftc.compiler.plan.objective import reference_of
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
    parallel: Parallel = Parallel()
    why_strategy: str = "derived: one device"


def _throughput(device: str, tokens: int, checkpointing: bool) -> float:
    """Relative tokens/s of a micro-batch: small batches leave the device idle. Saturates around
    2k tokens per step on a GPU and ~128 on a CPU (measured: benchmarks/README.md)."""
    saturation = 2048 if device == "cuda" else 128
    return tokens / (tokens + saturation) * (CHECKPOINTING_SPEED if checkpointing else 1.0)


def shape_for(spec: Spec, config: dict[str, object], *, micro: int, checkpointing: bool, dtype: str,
              optimizer: str, grad_accum: int, seq_len: int | None = None,
              method: MethodPlan | None = None, parallel: Parallel = Parallel(), attention: str = "sdpa") -> RunShape:
    """The RunShape of the script this spec emits, for one candidate setting (`method`: another
    method resolved for the model, default the spec's; `attention`: the planned attn_implementation)."""
    method = method or spec.method.resolve(config)
    objective = spec.train.objective
    # a paired preference step forwards chosen and rejected together: twice the rows (KTO's examples are
    # unpaired: one sequence each, measured in benchmarks/README.md); DPO and KTO use TRL's fused
    # head, ORPO and CPO/SimPO the model's full logits; the reference's no-grad forward ends before the
    # policy's, so only a reference copy's weights add to the peak (reference_of: adapter_copy, precomputed);
    # TRL's preference trainers turn dropout off (estimate_preference.without_dropout)
    rows = micro if objective in ("sft", "kto") else 2 * micro
    fused = method.method.trainer == "sft" and objective in ("sft", "dpo", "kto")
    method = method if objective == "sft" else without_dropout(method)
    loss: Literal["trl", "hf", "kept"] = "trl" if fused else "hf"
    if fused and lm_head_choice(spec.hardware.device, objective, method.method.trainer, parallel.strategy,
                                config).value == KEPT:
        loss = "kept"
    return RunShape(
        config=config, method=method, micro_batch=rows, seq_len=seq_len or spec.data.max_length,
        gradient_checkpointing=checkpointing, dtype=dtype, optimizer=optimizer, device=spec.hardware.device,
        padded=rows > 1, grad_accum=grad_accum, loss=loss, parallel=parallel,
        reference_copy=reference_of(spec) == "copy", objective=objective, attention=attention)


def gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def choose_batch(spec: Spec, config: dict[str, object] | None, dtype: str, budget_gib: float | None,
                 per_device: int, seq_len: int | None = None, attention: str = "sdpa") -> BatchChoice:
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
    strategies = candidates(spec)
    if config is None:  # no facts to estimate from: the simplest safe rules
        cap = 8 if device == "cpu" else 4
        micro = micros[0] if forced else max(d for d in micros if d <= cap)
        gc = flags[0] if forced_gc else device == "cuda"
        parallel, why_strategy = strategies[0]
        return BatchChoice(micro, gc, optimizer, None,
                           forced or f"planned: largest divisor of {per_device} not above {cap} (model size "
                           "unknown offline, so no estimate)",
                           forced_gc or ("planned: the model size is unknown offline" if gc
                                         else "planned: cpu, where memory is rarely the limit"),
                           _why_optimizer(optimizer), parallel,
                           why_strategy.replace("fits", "fits (model size unknown offline: the cheapest)"))
    limit = budget_gib * 2**30 * (1 - SAFETY_MARGIN) if budget_gib else None
    # 8-bit AdamW (bitsandbytes, CUDA only) quarters the optimizer states; used only when the fused
    # fp32 AdamW cannot fit, since it is slightly slower and quantizes the moments. A cheaper strategy
    # comes first (cheapest communication, then the optimizer).
    optimizers = [optimizer] + (["adamw_bnb_8bit"] if device == "cuda" else [])
    tried = [(p, why, o) for p, why in strategies for o in optimizers if not ("8bit" in o and p.strategy != "single")]
    candidates_: list[tuple[float, int, bool, Memory]] = []
    host_short: list[tuple[Parallel, Memory]] = []  # fits the device budget, not hardware.cpu_ram_gb
    for parallel, why_strategy, optimizer in tried:
        candidates_ = []
        for micro in micros:
            for gc in flags:
                shape = shape_for(spec, config, micro=micro, checkpointing=gc, dtype=dtype, optimizer=optimizer,
                                  grad_accum=per_device // micro, seq_len=seq_len, parallel=parallel,
                                  attention=attention)
                memory = estimate_memory(shape)
                tokens = micro * (seq_len or int(spec.data.max_length))
                candidates_.append((_throughput(device, tokens, gc), micro, gc, memory))
        on_device = [c for c in candidates_ if limit is None or c[3].total <= limit]
        fitting = [c for c in on_device if host_peak(spec, c[3]) <= host_limit(spec)]
        if fitting:
            break
        host_short += [(parallel, min(on_device, key=lambda c: host_peak(spec, c[3]))[3])] if on_device else []
    else:
        if host_short:
            raise BudgetError(_host_message(spec, host_short, limit, lambda p: shape_for(
                spec, config, micro=1, checkpointing=flags[-1], dtype=dtype, optimizer=optimizer, grad_accum=per_device,
                seq_len=seq_len, parallel=p, attention=attention)), "hardware.cpu_ram_gb")
        raise BudgetError(_no_fit_message(spec, config, dtype, budget_gib, candidates_, forced or forced_gc,
                                          tried[-1][0], attention))
    _, micro, gc, memory = max(fitting, key=lambda c: (c[0], -c[3].total))
    why_micro, why_gc = _why_batch(per_device, memory, gc, fitting, limit, budget_gib, forced, forced_gc)
    return BatchChoice(micro, gc, optimizer, memory, why_micro, why_gc, _why_optimizer(optimizer), parallel,
                       why_strategy)


def _why_batch(per_device: int, memory: Memory, gc: bool, fitting: list[tuple[float, int, bool, Memory]],
               limit: float | None, budget_gib: float | None, forced: str | None,
               forced_gc: str | None) -> tuple[str, str]:
    """The reasons of the chosen micro-batch and checkpointing."""
    if limit:
        budget = f"under {gib(limit)} ({budget_gib:g} GiB less {SAFETY_MARGIN:.0%} margin)"
        why_micro = forced or (f"planned: the fastest divisor of {per_device} whose estimated peak "
                               f"{gib(memory.total)} stays {budget}")
    else:
        why_micro = forced or (f"planned: the fastest divisor of {per_device} (estimated peak {gib(memory.total)}; "
                               "no budget set)")
    if forced_gc:
        return why_micro, forced_gc
    if gc:
        return why_micro, ("planned: without it no micro-batch fits the budget" if not any(not c[2] for c in fitting)
                           else "planned: a larger micro-batch fits with it (faster overall)")
    return why_micro, "planned: the run fits without it (faster)"


def by_strategy(spec: Spec, config: dict[str, object] | None, dtype: str, choice: BatchChoice, per_device: int,
                seq_len: int | None = None, attention: str = "sdpa") -> tuple[tuple[str, Memory], ...]:
    """The per-device estimate of every strategy the spec allows, at the chosen micro-batch and checkpointing."""
    if config is None or spec.hardware.world == 1 and spec.hardware.strategy == "auto":
        return ()
    hw = spec.hardware
    options = [(p, "") for p in (Parallel(s, hw.world, o) for s, o in AUTO_ORDER)  # type: ignore[arg-type]
               if incompatible(spec, p.strategy, p.offload) is None]
    if choice.parallel not in [p for p, _ in options]:
        options.insert(0, (choice.parallel, ""))
    return tuple((p.label, estimate_memory(shape_for(spec, config, micro=choice.micro, checkpointing=choice.checkpointing,
                                                     dtype=dtype, optimizer=choice.optimizer, seq_len=seq_len,
                                                     grad_accum=per_device // choice.micro, parallel=p,
                                                     attention=attention)))
                 for p, _ in options)


def host_peak(spec: Spec, memory: Memory) -> int:
    """Node 0's host RAM at its peak: while the model loads (estimate_shard.loading) or while training, what
    offload keeps there (on a CPU the processes' whole peak too: their device is host RAM)."""
    hw = spec.hardware
    training = memory.host + (memory.total if hw.device == "cpu" else 0)
    return max(memory.loading.node(hw.devices), training * hw.devices)


def host_limit(spec: Spec) -> float:
    """hardware.cpu_ram_gb less the safety margin, in bytes (no limit when it is not given)."""
    ram = spec.hardware.cpu_ram_gb
    return float("inf") if ram is None else ram * 2**30 * (1 - SAFETY_MARGIN)


def _host_message(spec: Spec, short: list[tuple[Parallel, Memory]], device_limit: float | None,
                  shape: Callable[[Parallel], RunShape]) -> str:
    """hardware.cpu_ram_gb is too small for every strategy that fits the devices: by how much, and what would fit
    (host and device both)."""
    hw, limit = spec.hardware, host_limit(spec)
    parallel, memory = min(short, key=lambda pm: host_peak(spec, pm[1]))
    load = memory.loading
    lines = [f"{hw.cpu_ram_gb:g} GiB per node ({gib(limit)} less the {SAFETY_MARGIN:.0%} margin) does not hold the "
             f"host RAM of {parallel.label}: an estimated {gib(host_peak(spec, memory))} on node 0",
             f"  while loading: {gib(load.node(hw.devices))} ({load.why})",
             f"  while training: {gib(host_peak(spec, replace(memory, loading=Loading(0, 0, 0, ''))))} (what offload "
             "keeps there" + (", and the processes themselves on a CPU" if hw.device == "cpu" else "") + ")"]
    options = []
    if parallel.strategy != "zero3" and incompatible(spec, "zero3", parallel.offload) is None:
        zero3 = estimate_memory(shape(replace(parallel, strategy="zero3")))
        if host_peak(spec, zero3) <= limit and (device_limit is None or zero3.total <= device_limit):
            options.append(f"strategy = \"zero3\" (zero.Init loads each process's partition only: estimated "
                           f"{gib(host_peak(spec, zero3))} on node 0)")
    if parallel.offload != "none":
        kept = estimate_memory(shape(replace(parallel, offload="none")))
        if host_peak(spec, kept) <= limit and (device_limit is None or kept.total <= device_limit):
            options.append(f"offload = \"none\" (estimated {gib(host_peak(spec, kept))} on node 0, "
                           f"{gib(kept.total)} per device)")
    if parallel.strategy == "zero3":  # the partitions shrink with the world size; rank 0's checkpoint does not
        for nodes in range(hw.nodes + 1, 65):
            more = estimate_memory(shape(replace(parallel, world=hw.devices * nodes)))
            if host_peak(spec, more) <= limit and (device_limit is None or more.total <= device_limit):
                options.append(f"nodes = {nodes} (estimated {gib(host_peak(spec, more))} on node 0; batch_size a "
                               f"multiple of {hw.devices * nodes})")
                break
    options.append(f"nodes with at least {host_peak(spec, memory) / (1 - SAFETY_MARGIN) / 2**30:,.1f} GiB "
                   "(hardware.cpu_ram_gb)")
    return "\n".join([*lines, "  what would fit: " + "; or ".join(options)])


def _why_optimizer(optimizer: str) -> str:
    if "8bit" in optimizer:
        return "planned: 8-bit AdamW (bitsandbytes), since fp32 AdamW states do not fit"
    if optimizer.endswith("fused"):
        return ("planned: fused AdamW on cuda: one kernel updates every parameter and its two moments, "
                "no foreach temporaries")
    return "planned: AdamW (fused kernels are for cuda)"


def _no_fit_message(spec: Spec, config: dict[str, object], dtype: str, budget_gib: float | None,
                    candidates: list[tuple[float, int, bool, Memory]], forced: str | None,
                    parallel: Parallel = Parallel(), attention: str = "sdpa") -> str:
    smallest = min(candidates, key=lambda c: c[3].total)
    _, micro, gc, memory = smallest
    limit = (budget_gib or 0) * 2**30 * (1 - SAFETY_MARGIN)
    where = f" with {parallel.label}" if parallel.strategy != "single" else ""
    lines = [f"the run does not fit{where}: the smallest setting (micro-batch {micro}, gradient checkpointing "
             f"{'on' if gc else 'off'}) needs an estimated {gib(memory.total)} per device, "
             f"{gib(memory.total - limit)} over the budget of {budget_gib:g} GiB less a {SAFETY_MARGIN:.0%} margin "
             f"({gib(limit)})",
             "  " + ", ".join(f"{k} {gib(v)}" for k, v in memory.as_dict().items() if v and k != "total")]
    if forced:
        lines.append(f"  {forced.split(': ')[1]} is set in the spec; \"auto\" lets the planner search")

    def smallest_total(**change: object) -> int:
        options = {"micro": 1, "checkpointing": True, "dtype": dtype, "optimizer": "adamw_torch_fused",
                   "grad_accum": 1, "parallel": parallel, "attention": attention, **change}
        return estimate_memory(shape_for(spec, config, **options)).total  # type: ignore[arg-type]

    options = []
    for lighter in spec.method.alternatives():
        if (total := smallest_total(method=lighter.resolve(config))) <= limit:
            options.append(f"method.kind = \"{lighter.kind}\" (estimated {gib(total)})")  # type: ignore[attr-defined]
    length = spec.data.max_length
    while length > 64:
        length //= 2
        if (total := smallest_total(seq_len=length)) <= limit:
            options.append(f"data.max_length = {length} (estimated {gib(total)})")
            break
    options += _more_devices(spec, limit, smallest_total)
    needed = memory.total / (1 - SAFETY_MARGIN) / 2**30
    options.append(f"a device with at least {needed:,.1f} GiB (hardware.vram_gb)")
    lines.append("  what would fit: " + "; or ".join(options))
    return "\n".join(lines)


def _more_devices(spec: Spec, limit: float, smallest_total: Callable[..., int]) -> list[str]:
    """Offload the spec did not allow, and the fewest devices that would fit (sharded, no offload)."""
    hw, options = spec.hardware, []
    for offload in ("optimizer", "all"):
        if OFFLOAD_LEVEL[offload] > OFFLOAD_LEVEL[hw.offload] and incompatible(spec, "zero3", offload) is None:
            total = smallest_total(parallel=Parallel("zero3", hw.world, offload))  # type: ignore[arg-type]
            if total <= limit:
                options.append(f"strategy = \"zero3\", offload = \"{offload}\" (estimated {gib(total)} per device)")
                break
    strategy = next((s for s in ("fsdp", "zero3") if incompatible(spec, s, "none") is None), None)
    if strategy is not None:
        for world in range(hw.world + hw.devices, 1025, hw.devices):  # whole nodes
            total = smallest_total(parallel=Parallel(strategy, world))  # type: ignore[arg-type]
            if total <= limit:
                per_node = f" ({-(-world // hw.devices)} nodes of {hw.devices})" if hw.devices > 1 else ""
                options.append(f"{world} devices{per_node} with strategy = \"{strategy}\" (estimated "
                               f"{gib(total)} per device; batch_size a multiple of {world})")
                break
    return options
