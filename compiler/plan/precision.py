"""hardware.precision: the spec's, else chosen from the GPU or, on CPU, from what the CPU multiplies natively.

On a CPU with AMX or AVX-512 BF16 a frozen base trains in bf16 (weights in bf16, bf16 autocast, the
adapters PEFT adds in fp32: the emitted TrainingArguments' bf16=True with use_cpu=True); a method
whose trained weights would be bf16 too (full, freeze, linear_probe: the base's own; llama_adapter:
PEFT makes its prompts in the base's dtype) trains in fp32, where AdamW's small steps do not round away.
"""

from __future__ import annotations

from ftc.compiler.catalog import find_gpu
from ftc.compiler.host import HostFacts
from ftc.compiler.spec import Spec

# The yoda job of benchmarks/throughput.py (SmolLM2-135M LoRA, one core with avx512_bf16 and amx_bf16):
# 78.2 tokens/s with the base in bf16 under bf16 autocast, 60.6 in fp32 (benchmarks/README.md).
CPU_BF16_MEASURED = "the yoda LoRA job on one such core: 78.2 tokens/s vs 60.6 in fp32, benchmarks/README.md"


def precision_choice(spec: Spec, host: HostFacts) -> tuple[str, str]:
    hw = spec.hardware
    if hw.precision != "auto":
        return hw.precision, "spec: hardware.precision"
    if hw.device == "cpu":
        return _cpu_precision(spec, host)
    gpu = find_gpu(hw.gpu) if hw.gpu else None
    if gpu is not None:
        if gpu.bf16:
            return "bf16", f"planned: the {gpu.name} computes in bf16 (range of fp32, no loss scaling)"
        return "fp16", f"planned: the {gpu.name} has no bf16; fp16 with loss scaling"
    return "bf16", "planned: bf16, assuming an Ampere or newer GPU; set precision = \"fp16\" for T4/V100"


def _cpu_precision(spec: Spec, host: HostFacts) -> tuple[str, str]:
    """bf16 where the CPU multiplies it natively and the trained weights stay fp32 (PEFT's adapters), else fp32.
    A CPU spec is compiled on the machine that trains it (ftc run compiles and runs), so its flags decide."""
    flag = host.bf16_matmul
    if flag is None:
        return "fp32", (f"planned: this CPU has no native bf16 matmul (neither amx_bf16 nor avx512_bf16 in "
                        f"{host.source}): bf16 would be emulated, slower than fp32; fp16 is not supported on CPU")
    found = f"{flag} in {host.source}"
    if spec.method.trains_in_load_dtype:
        trains = "the base weights" if spec.method.trains_base_weights else "weights PEFT makes in the base's dtype"
        return "fp32", (f"planned: this CPU multiplies bf16 natively ({found}), but {spec.method.kind} trains "
                        f"{trains}, and in bf16 AdamW's steps below 1/256 of a weight round away "
                        "(lr 2e-5 on a weight of 0.02): fp32; set precision = \"bf16\" to train them in bf16 anyway")
    return "bf16", (f"planned: this CPU multiplies bf16 natively ({found}): the frozen base in bf16 under "
                    f"bf16 autocast, the trained weights in fp32 ({CPU_BF16_MEASURED})")
