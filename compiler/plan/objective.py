"""The plan's objective section: SFT, or a preference objective (DPO, ORPO, KTO, SimPO) with its knobs."""

from __future__ import annotations

from ftc.compiler.plan.types import ObjectivePlan, Setting
from ftc.compiler.spec import DEFAULT_BETA, REFERENCE_OBJECTIVES, Spec


def reference_of(spec: Spec) -> str | None:
    """How dpo and kto get their reference log-probabilities: `adapter_copy` (TRL copies the adapter as it starts
    into a frozen adapter "ref", dpo_trainer.py: the base itself for a new adapter, the continued one with
    model.adapter), `copy` (a frozen second model) or `precomputed` (once, before training); None without one."""
    t = spec.train
    if t.objective not in REFERENCE_OBJECTIVES:
        return None
    if t.reference == "auto":
        return "adapter_copy" if spec.method.peft else "copy"
    return t.reference


def objective_notes(spec: Spec) -> list[str]:
    """What the spec asks for that the objective overrides (for plan.md's notes)."""
    dropout = getattr(spec.method, "dropout", 0) if "dropout" in spec.method.model_fields_set else 0
    if spec.train.objective == "sft" or not dropout:
        return []
    return [f"method.dropout = {dropout} does not apply: TRL's preference trainers switch dropout off "
            "(disable_dropout = True, their default), so chosen, rejected and the reference see the same network; "
            "the estimate follows"]


def objective_plan(spec: Spec) -> ObjectivePlan:
    t = spec.train
    if t.objective == "sft":
        off = Setting(None, "default: sft has none")
        return ObjectivePlan(objective=Setting("sft", "default"), beta=off, loss_variant=off, simpo_gamma=off,
                             reference=off)
    given = "beta" in t.model_fields_set
    beta = Setting(t.beta if given else DEFAULT_BETA[t.objective],
                   "spec: train.beta" if given else f"default: for {t.objective}")
    reference = reference_of(spec)
    why_reference = {"adapter_copy": ("planned: the adapter as training starts, frozen (TRL's adapter \"ref\"; the base "
                                     "is not copied)" + (f": the continued adapter of {spec.model.adapter}" if
                                     spec.model.adapter else ": a new adapter starts as the base itself")),
                     "copy": "planned: full training needs a frozen copy of the base" if t.reference == "auto"
                     else "spec: train.reference", "precomputed": "spec: train.reference"}
    return ObjectivePlan(
        objective=Setting(t.objective, "spec: train.objective"), beta=beta,
        loss_variant=Setting(t.dpo_loss if t.objective == "dpo" else None,
                             "spec: train.dpo_loss" if "dpo_loss" in t.model_fields_set else "default"),
        simpo_gamma=Setting(t.simpo_gamma if t.objective == "simpo" else None,
                            "spec: train.simpo_gamma" if "simpo_gamma" in t.model_fields_set else "default"),
        reference=Setting(reference, why_reference.get(reference or "", "derived: no reference model")))
