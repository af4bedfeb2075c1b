"""Which multi-device strategies a spec may use, in the order the planner tries them (cheapest first),
and why a strategy cannot run a method (the compatibility matrix; checks.py refuses an explicit one)."""

from __future__ import annotations

from ftc.compiler.estimate_shard import Parallel
from ftc.compiler.spec import Spec

# Cheapest first: DDP all-reduces gradients only; ZeRO-2 moves the same volume (reduce-scatter +
# all-gather) and shards the optimizer; FSDP2 and ZeRO-3 also gather every layer's weights in forward
# and backward (1.5x DDP's traffic, ZeRO paper §7.2); offload adds host<->device copies of the states
# (ZeRO-Offload, arXiv:2101.06840) and of the weights. FSDP2 before ZeRO-3: native to torch, no DeepSpeed.
AUTO_ORDER: tuple[tuple[str, str], ...] = (("ddp", "none"), ("zero2", "none"), ("fsdp", "none"),
                                           ("zero3", "none"), ("zero3", "optimizer"), ("zero3", "all"))
OFFLOAD_LEVEL = {"none": 0, "optimizer": 1, "all": 2}
SHARDS_WEIGHTS = ("fsdp", "zero3")


def incompatible(spec: Spec, strategy: str, offload: str) -> str | None:
    """Why `strategy` (+ `offload`) cannot train this spec's method, with the upstream issue; None: it can."""
    method, quant = spec.method, spec.method.quantization
    if strategy == "fsdp" and spec.hardware.device == "cpu":
        return ("accelerate enables FSDP only on accelerators (AcceleratorState sets DistributedType.FSDP for "
                "MULTI_GPU/NPU/XPU/..., never MULTI_CPU: accelerate/state.py), so CPU processes would run plain "
                "DDP without sharding anything; use strategy = \"ddp\" or \"zero3\" on CPU")
    if strategy in SHARDS_WEIGHTS and method.sharding_problem:
        return method.sharding_problem
    if strategy in SHARDS_WEIGHTS and quant == "int8":
        return ("8-bit (LLM.int8) weights cannot be sharded: FSDP refuses integer parameters (accelerate#1415, "
                "peft#2833 'QLoRA FSDP doesn't work with 8bit', bitsandbytes#1709) and ZeRO-3 partitions them "
                "without their row scales (bitsandbytes#466); use quantize = \"nf4\" or strategy = \"ddp\"")
    if method.save_template:
        return (f"the method saves its result with its own code ({method.save_template}), which reads whole "
                "weights in one process; multi-process saving is not built for it; train on one device")
    if strategy in SHARDS_WEIGHTS and (spec.eval.compare or spec.eval.metrics):
        return (f"eval.compare and eval.metrics run the model outside the Trainer, where {strategy} holds only a "
                "shard of every weight; set compare = 0 and metrics = [], or strategy = \"ddp\" or \"zero2\"")
    if strategy == "fsdp" and method.own_optimizer:
        return (f"the method builds its own optimizer ({method.own_optimizer}), and transformers' Trainer refuses "
                "an optimizer passed in under FSDP ('Passing `optimizers` is not allowed if PyTorch FSDP is "
                "enabled', trainer.py); use strategy = \"ddp\", \"zero2\" or \"zero3\"")
    if offload == "optimizer" and strategy == "fsdp":
        return ("FSDP offloads weights, gradients and optimizer states together (CPUOffloadPolicy), not the "
                "optimizer alone; use offload = \"all\", or strategy = \"zero3\" for optimizer-only offload")
    if offload == "all" and strategy == "zero2":
        return "weight offload (offload_param) is ZeRO-3 only; use strategy = \"zero3\" or offload = \"optimizer\""
    if offload != "none" and strategy == "ddp":
        return "DDP keeps every state on the device; offload needs strategy = \"zero2\", \"zero3\" or \"fsdp\""
    return None


def candidates(spec: Spec) -> list[tuple[Parallel, str]]:
    """The strategies the planner may try, cheapest first, each with the reason it would be chosen."""
    hw = spec.hardware
    world = hw.world
    if hw.strategy != "auto":
        return [(Parallel(hw.strategy, world, hw.offload), f"spec: hardware.strategy = {hw.strategy!r}"
                 + (f", offload = {hw.offload!r}" if hw.offload != "none" else ""))]
    if world == 1 and hw.offload == "none":
        return [(Parallel(), "derived: one device")]
    out = []
    for number, (strategy, offload) in enumerate(AUTO_ORDER):
        if OFFLOAD_LEVEL[offload] > OFFLOAD_LEVEL[hw.offload] or (world == 1 and strategy != "zero3"):
            continue
        if incompatible(spec, strategy, offload) is None:
            cheaper = [Parallel(s, world, o).label for s, o in AUTO_ORDER[:number]
                       if incompatible(spec, s, o) is None and OFFLOAD_LEVEL[o] <= OFFLOAD_LEVEL[hw.offload]]
            why = ("planned: the cheapest strategy (least communication) whose estimated peak fits" if not cheaper
                   else f"planned: {', '.join(cheaper)} would not fit the per-device budget")
            out.append((Parallel(strategy, world, offload), why))  # type: ignore[arg-type]
    return out
