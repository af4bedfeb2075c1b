"""What-if plans: the spec compiled for each GPU of a list (and each device count), the method kept
when it fits and changed when it does not, with the estimated step and total time of each
(compiler/throughput.py). Every row is a real compile of the spec with overrides, so it is exactly
what `ftc compile --set hardware.gpu=...` would plan.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.catalog import GPUS, Gpu, find_gpu
from ftc.compiler.compile import CompileResult, compile_spec
from ftc.compiler.load import load_spec
from ftc.compiler.overrides import REMOVE, Override
from ftc.compiler.plan.build import sequence_length
from ftc.compiler.throughput import StepTime, flops_per_token, gpu_step_time
from ftc.core.errors import BudgetError, Problem, SpecError

@dataclass(frozen=True)
class Row:
    """One GPU (and device count) of a what-if table."""

    gpu: str
    devices: int
    fits: bool
    method: str = ""
    quantization: str = ""
    change: str = "kept"
    """What was changed to fit: "kept", or e.g. "quantize nf4"."""
    micro: int = 0
    accum: int = 0
    checkpointing: bool = False
    strategy: str = "single device"
    peak_gib: float | None = None
    budget_gib: float | None = None
    step: StepTime | None = None
    total_steps: int | None = None
    note: str = ""

    @property
    def total_seconds(self) -> float | None:
        return self.step.seconds * self.total_steps if self.step and self.total_steps else None


def parse_gpus(text: str) -> list[Gpu]:
    """`"RTX 4090, A100-80GB, H100"` -> catalog rows; raises SpecError naming unknown names."""
    found, problems = [], []
    for name in (part.strip() for part in text.split(",")):
        if not name:
            continue
        gpu = find_gpu(name)
        if gpu is None:
            close = difflib.get_close_matches(name, [g.name for g in GPUS], n=1, cutoff=0.4)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(g.name for g in GPUS)}"
            problems.append(Problem(f"--gpus {text}", None, "", f"{name!r} is not in the GPU catalog; {hint}"))
        else:
            found.append(gpu)
    if problems or not found:
        raise SpecError(problems or [Problem("--gpus", None, "", "name at least one GPU, e.g. --gpus \"RTX 4090, H100\"")])
    return found


def _alternatives(method: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Methods to try, in order, when the spec's does not fit: quantize the frozen base, or for
    methods that train the base weights, LoRA and then QLoRA."""
    from ftc.compiler.methods import METHODS

    cls = METHODS[kind]
    if cls.trains_base_weights:
        return [(f"{kind} does not fit", {"kind": "lora"}), (f"{kind} and lora do not fit", {"kind": "qlora"})]
    if "quantize" in cls.model_fields and method.get("quantize", "none") == "none" and getattr(cls, "nf4_ok", False):
        return [("unquantized does not fit", {**method, "quantize": "nf4"})]
    return []


def _row(result: CompileResult, gpu: Gpu, devices: int, change: str) -> Row:
    plan, facts = result.plan, result.facts
    assert facts.model is not None and facts.model.config is not None
    seq_len, _ = sequence_length(result.source.spec, facts, plan["max_length"])
    flops, why = flops_per_token(facts.model.config, result.source.spec.method.resolve(facts.model.config), seq_len,
                                 bool(plan["gradient_checkpointing"]))
    step = gpu_step_time(gpu, plan["precision"], flops, plan["batch_size"] * seq_len, plan["quantization"], devices)
    note = f"{why}; {step.why}" if step else "no time: fp32 (the catalog holds bf16/fp16 peaks only)"
    strategy = str(plan["strategy"]) if "strategy" in plan.settings else "single device"
    return Row(gpu.name, devices, True, plan.kind, plan["quantization"] or "none", change, plan["micro_batch_size"],
               plan["grad_accum"], bool(plan["gradient_checkpointing"]), strategy,
               plan.memory.total / 2**30 if plan.memory else None, plan.budget_bytes / 2**30 if plan.budget_bytes else None,
               step, plan["total_steps"], note)


def plan_for(path: str | Path, gpu: Gpu, devices: int, overrides: tuple[Override, ...]) -> Row:
    """The spec planned for `devices` x `gpu`: its own method if it fits, else the first alternative that does."""
    flag = f"--gpus {gpu.name}"
    hardware = (Override(("hardware", "device"), "cuda", flag), Override(("hardware", "gpu"), gpu.name, flag),
                Override(("hardware", "vram_gb"), REMOVE, flag), Override(("hardware", "devices"), devices, f"--devices {devices}"))
    spec = load_spec(path, overrides).spec
    if spec.train.learning_rate == "auto":  # measured on the machine that trains; memory and time do not depend on it
        hardware += (Override(("train", "learning_rate"), REMOVE, "--gpus: the rule's rate for \"auto\""),)
    method = spec.method.model_dump(exclude_unset=True) | {"kind": spec.method.kind}
    tries = [("kept", ()), *((change, (Override(("method",), table, f"--gpus: {change}"),))
                             for change, table in _alternatives(method, spec.method.kind))]
    reasons = []
    for change, extra in tries:
        try:
            result = compile_spec(path, overrides=(*overrides, *hardware, *extra))
        except BudgetError as exc:
            reasons.append(f"{change}: {str(exc).splitlines()[0]}")
            continue
        except SpecError as exc:  # a check against this GPU (e.g. precision = "bf16" on a T4)
            problems = "; ".join(f"{p.key}: {p.message}" for p in exc.problems)
            return Row(gpu.name, devices, False, method=spec.method.kind, note=f"cannot be planned: {problems}")
        if result.facts.model is None or result.facts.model.config is None or result.plan.memory is None:
            return Row(gpu.name, devices, False, note="the model's config is not known offline: no estimate")
        return _row(result, gpu, devices, change)
    return Row(gpu.name, devices, False, method=spec.method.kind, note="does not fit: " + " | ".join(reasons))


def what_if(path: str | Path, gpus: list[Gpu], devices: list[int], overrides: tuple[Override, ...] = ()) -> list[Row]:
    """One row per GPU and device count."""
    return [plan_for(path, gpu, n, overrides) for gpu in gpus for n in devices]
