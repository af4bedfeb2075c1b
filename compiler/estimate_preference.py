"""What a preference objective changes in the estimate (compiler/estimate.py), read off TRL 1.16's trainers.

DPO and KTO run the policy through TRL's fused LM head (estimate_logits.logits_bytes, "trl"); ORPO and SimPO (CPO's
trainer) take the model's full logits of the concatenated chosen + rejected rows (shape_for doubles the rows).
Every TRL preference trainer sets each nn.Dropout's p to 0 as it starts (`disable_dropout = True` by default:
trl/trainer/dpo_config.py, kto_config.py, experimental/orpo/orpo_config.py, experimental/cpo/cpo_config.py;
trl/trainer/utils.py disable_dropout_in_model), so the adapters' dropout keeps nothing there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ftc.compiler.estimate import Dims, RunShape
    from ftc.compiler.methods.base import MethodPlan

FULL_LOGITS = ("orpo", "simpo")
"""Objectives whose loss reads the model's full logits (shape_for: loss "hf")."""


def without_dropout(method: MethodPlan) -> MethodPlan:
    """The method as a TRL preference trainer runs it: dropout 0 (disable_dropout_in_model)."""
    if "dropout" not in type(method.method).model_fields:
        return method
    return replace(method, method=method.method.model_copy(update={"dropout": 0.0}))


def full_logits_bytes(shape: RunShape, d: Dims, e: int) -> int:
    """Vocab-wide bytes at the peak of ORPO's and SimPO's loss, in the backward of the log-probs (measured on
    CPU in fp32 at aten::cat: benchmarks/README.md). `get_batch_logps` (experimental/orpo/orpo_trainer.py,
    experimental/cpo/cpo_trainer.py) calls trl/trainer/utils.py selective_log_softmax on logits[:, :-1]:
    in fp32 a gather and one logsumexp per row, which keeps the logits; its backward forms one gradient per
    row, and the rows' unbind stacks them into another (aten::cat): logits + 2 gradients. In bf16 each row's
    log_softmax output is kept as well (not measured). ORPO adds the chosen rows' SFT cross-entropy
    (concatenated_forward's cross_entropy_loss), whose log_softmax output lives until its own backward; SimPO
    runs with cpo_alpha = 0, which skips it."""
    rows, positions = shape.micro_batch, max(1, shape.seq_len - 1)
    per_entry = 2 if e == 4 else 3  # gradients of the rows and their stack; in bf16 also the kept log_softmax
    total = rows * shape.seq_len * d.vocab * e + per_entry * rows * positions * d.vocab * e
    if shape.objective == "orpo":
        total += rows // 2 * positions * d.vocab * e  # the chosen half's cross-entropy log_softmax
    return total
