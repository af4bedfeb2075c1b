"""SFTTrainer's loss head over the kept positions only, for devices without Triton (the CPU).

TRL 1.16's SFTTrainer always patches the model with its fused LM head (`trl.trainer.utils.add_fused_lm_head`)
and asks it, with `fused_lm_head=True`, for per-token log-probabilities, entropy and top-1 hits. With Triton
(CUDA) that head projects only the positions whose next-token label is kept; elsewhere it projects every
position (fixed tile shapes, for compilers such as Neuron's), in 32,768-wide vocabulary tiles folded by torch
ops in fp32, recomputes the projection in backward and upcasts each tile and the head's weight to fp32 for the
gradient products. With answer-only loss most positions are -100, so on CPU most of that work is dropped:
31 % of a step of the yoda job (py-spy, benchmarks/README.md).

`score_kept_positions` replaces the patched forward by one that returns the fields SFTTrainer reads, computed
as TRL's do (the projection in the compute dtype, its log-softmax in fp32), from the head's own forward on the
kept positions: one projection, one fp32 log-softmax, autograd's backward. The planner chooses it
(compiler/plan/speed.py `lm_head_choice`) only where it computes the same loss: no logit scaling or soft-capping,
no MoE auxiliary loss, the head's weight not sharded.
"""

from __future__ import annotations

import functools
import types
from typing import Any

import torch
from trl.trainer.utils import FusedCausalLMOutput


def score_kept_positions(model: Any) -> None:
    """Make `model(..., labels=..., fused_lm_head=True)` project only the positions whose label is kept.

    `model` is the trainer's model (a PEFT model or the causal LM itself) after SFTTrainer patched it; calls
    without `fused_lm_head` (generation, the model's own loss) go through unchanged."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    trl_forward = causal_lm.forward  # TRL's patched forward: the original one when fused_lm_head is off

    @functools.wraps(type(causal_lm).forward)
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: torch.Tensor | None = None,
                shift_labels: torch.Tensor | None = None, num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not fused_lm_head or kwargs.get("output_router_logits"):
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                               num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        if shift_labels is None:  # the label of position t is the token at t + 1
            assert labels is not None
            hidden, labels = hidden[:, :-1], labels[:, 1:]
        else:
            labels = shift_labels
        mask = labels != -100
        targets = labels[mask]
        log_p = self.get_output_embeddings()(hidden[mask]).float().log_softmax(-1)
        kept_log_probs = log_p.gather(-1, targets[:, None]).squeeze(-1)
        with torch.no_grad():
            kept_entropy = -(log_p.exp() * log_p).sum(-1)
            kept_top1 = log_p.argmax(-1) == targets  # argmax takes the first maximum, as TRL's is_top1 does
        # masked_scatter keeps the output connected to the model even when no label is kept (a zero loss)
        log_probs = log_p.new_zeros(mask.shape).masked_scatter(mask, kept_log_probs)
        entropy = log_p.new_zeros(mask.shape).masked_scatter(mask, kept_entropy)
        is_top1 = torch.zeros_like(mask).masked_scatter(mask, kept_top1)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=entropy,
                                   is_top1=is_top1, label_mask=mask)

    causal_lm.forward = types.MethodType(forward, causal_lm)
