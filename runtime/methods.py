"""Method helpers the emitted train.py calls where PEFT has no equivalent: choosing which of the
model's own weights train (`freeze`, `linear_probe`)."""

from __future__ import annotations

from typing import Any

from ftc.core.events import EventLog


class MethodError(Exception):
    """The method's settings do not match the model (a message for the user, no traceback)."""


def decoder_blocks(model: Any) -> tuple[str, int]:
    """(module path, count) of the model's decoder blocks: the ModuleList with one entry per layer."""
    import torch

    depth = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == depth:
            return name, depth
    raise MethodError(f"cannot find the {depth} decoder blocks of {type(model).__name__}; "
                      "use kind = \"full\" or a LoRA-family method for this architecture")


def freeze_except(model: Any, *, last_layers: int, modules: list[str], head: bool, events: EventLog) -> list[str]:
    """Freeze every parameter, then unfreeze those of the last `last_layers` blocks (only the ones
    whose names contain one of `modules`, if given) and, with `head`, the output head. Returns the
    trained parameter names; a pattern that matches nothing is an error."""
    blocks, depth = decoder_blocks(model)
    first = depth - last_layers
    prefixes = tuple(f"{blocks}.{i}." for i in range(first, depth))
    head_params = {id(p) for p in model.get_output_embeddings().parameters()} if head else set()
    trained, matched = [], set()
    for name, param in model.named_parameters():
        in_block = name.startswith(prefixes)
        hits = {m for m in modules if m in name[len(blocks):]} if in_block else set()
        matched |= hits
        param.requires_grad = (in_block and (not modules or bool(hits))) or id(param) in head_params
        if param.requires_grad:
            trained.append(name)
    missing = [m for m in modules if m not in matched]
    if missing:
        raise MethodError(f"method.modules {missing} match no weight of blocks {first}..{depth - 1} under {blocks}; "
                          f"weight names look like {next(n for n, _ in model.named_parameters() if n.startswith(prefixes))}")
    if head and model.get_output_embeddings().weight is model.get_input_embeddings().weight:
        events.write("warning", "the output head is tied to the input embeddings: training the head trains both")
    return trained
