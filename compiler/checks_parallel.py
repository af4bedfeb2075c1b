"""The multi-device checks: a strategy the world size and the method can run, and offload it supports (each
refusal names its upstream issue; compiler/strategy.py). hardware.cpu_ram_gb is checked by the planner
(plan/budget.py host_peak), against the estimated host RAM while loading and while training."""

from __future__ import annotations

from collections.abc import Iterator

from ftc.compiler.checks import Facts, Finding, check
from ftc.compiler.strategy import candidates, incompatible
from ftc.compiler.spec import Spec


@check
def strategy_fits_method(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """An explicit strategy has the devices it needs and can run the method and the offload asked for."""
    hw = spec.hardware
    if hw.strategy == "ddp" and hw.world == 1:
        yield "hardware.strategy", ("DDP needs several devices (devices x nodes = 1); set devices = N, or leave "
                                    "strategy = \"auto\" for one device")
    if hw.strategy == "auto" and hw.world == 1 and hw.offload != "none":
        yield "hardware.offload", ("offload on one device runs through DeepSpeed: set strategy = \"zero3\" (or "
                                   "\"zero2\" with offload = \"optimizer\")")
    if hw.strategy != "auto" and (problem := incompatible(spec, hw.strategy, hw.offload)):
        yield ("hardware.offload" if hw.offload != "none" and incompatible(spec, hw.strategy, "none") is None
               else "hardware.strategy"), problem
    if hw.strategy == "auto" and hw.world > 1 and not candidates(spec):
        yield "hardware.devices", incompatible(spec, "ddp", "none") or "no multi-device strategy runs this spec"
    if hw.strategy == "auto" and hw.world > 1 and hw.offload != "none":
        if all(incompatible(spec, s, hw.offload) for s in ("zero2", "zero3", "fsdp")):
            yield "hardware.offload", incompatible(spec, "zero3", hw.offload) or "no strategy offloads for this method"

