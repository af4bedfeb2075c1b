"""Which loss head SFTTrainer runs: TRL's fused head, or ftc's head over the kept positions (CPU).

TRL 1.16's fused LM head projects only the positions whose label is kept where Triton runs (CUDA); on a CPU it
projects every position, in fp32 tiles, and recomputes the projection in backward. ftc.runtime.lmhead computes
the same loss from the kept positions alone (measured below). It is chosen where it computes what TRL's head
does: SFT through SFTTrainer, the head's weight whole on each process (one device or DDP), and no logit
transform TRL's head applies (soft-capping, scaling).
"""

from __future__ import annotations

from typing import Any

from ftc.compiler.plan.types import Setting

KEPT = "kept-positions"
TRAINER = "trainer"

# config.json keys of the logit transforms TRL's fused head applies (trl/trainer/utils.py add_fused_lm_head)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")

# benchmarks/README.md (issue 19): the yoda job (SmolLM2-135M LoRA, answer-only loss) on one core, 2 rounds each
MEASURED = "the yoda job on one CPU core: 175 tokens/s against 124 with TRL's head, the same losses: benchmarks/README.md"


def lm_head_choice(device: str, objective: str, trainer: str, strategy: str,
                   config: dict[str, Any] | None) -> Setting[str]:
    """LM_HEAD: "kept-positions" where ftc.runtime.lmhead computes TRL's loss for less, else "trainer"."""
    if objective != "sft":
        return Setting(TRAINER, "derived: the preference trainers compute their own loss")
    if trainer != "sft":
        return Setting(TRAINER, "derived: this method trains through Trainer, with the model's own loss")
    if device != "cpu":
        return Setting(TRAINER, "planned: TRL's fused head, which with Triton projects only the kept positions")
    if strategy not in ("single", "ddp"):
        return Setting(TRAINER, f"derived: {strategy} shards the head's weight, which TRL's fused head gathers")
    transforms = [key for key in LOGIT_TRANSFORMS if (config or {}).get(key) is not None]
    if transforms:
        return Setting(TRAINER, f"derived: the model transforms its logits ({', '.join(transforms)}), "
                                "as TRL's fused head does")
    return Setting(KEPT, "planned: on CPU TRL's fused head projects every position in fp32 tiles (no Triton); "
                         "the head projects only the positions whose label is kept, in the compute dtype "
                         f"({MEASURED})")
