"""Helpers the emitted train.py calls around the Hugging Face Trainer: events, parameter counts,
and the before/after generation check. Imported only by training scripts (needs torch)."""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

from ftc.core.events import EventLog, describe
from ftc.runtime import ranks


class EventsCallback(TrainerCallback):  # type: ignore[misc]
    """Writes step and eval events (with tokens/s) as the Trainer logs them, and prints one line for each (it
    replaces the Trainer's PrinterCallback, which prints raw dicts)."""

    def __init__(self, events: EventLog) -> None:
        self.events = PrintingLog(events)
        self._last_time: float | None = None
        self._last_tokens = 0
        self._stepped_lr: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._last_time = time.perf_counter()
        self._last_tokens = state.num_input_tokens_seen or 0
        self.events.write("status", state="running", step=state.global_step, total_steps=state.max_steps,
                          message=f"training for {state.max_steps} steps")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        # The rate the step trained at, from the optimizer itself: the Trainer logs the scheduler's record of
        # it, which lags one step behind when a resumed run's rates were lowered (a NaN rollback).
        if optimizer is not None and optimizer.param_groups:
            self._stepped_lr = float(optimizer.param_groups[0]["lr"])

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        logs = dict(logs or {})
        step = state.global_step
        if "loss" in logs:
            now = time.perf_counter()
            tokens = state.num_input_tokens_seen or 0
            elapsed = now - (self._last_time or now)
            rate = (tokens - self._last_tokens) / elapsed if elapsed > 0 else None
            self._last_time, self._last_tokens = now, tokens
            lr = logs.get("learning_rate") if self._stepped_lr is None else self._stepped_lr
            self.events.write("step", step=step, total_steps=state.max_steps, epoch=round(state.epoch or 0, 4),
                              loss=logs["loss"], learning_rate=lr, grad_norm=logs.get("grad_norm"),
                              tokens_per_s=round(rate, 1) if rate else None, tokens_seen=tokens,
                              memory_bytes=memory_in_use(), **preference_fields(logs))
        elif "eval_loss" in logs:
            self.events.write("eval", step=step, loss=logs["eval_loss"], epoch=round(state.epoch or 0, 4),
                              **preference_fields(logs, "eval_"))


PREFERENCE_LOGS = {"rewards/chosen": "reward_chosen", "rewards/rejected": "reward_rejected",
                   "rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy"}
"""TRL's preference metrics (DPO, KTO, ORPO, CPO/SimPO log them) -> the step and eval events' fields."""


def preference_fields(logs: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The rewards of the chosen and rejected answers, their margin and the share of pairs whose chosen
    reward is higher, as averaged over the logging steps by TRL (empty for sft)."""
    return {name: float(logs[prefix + key]) for key, name in PREFERENCE_LOGS.items() if prefix + key in logs}


def memory_in_use() -> int | None:
    """Peak GPU memory reserved by this process so far on CUDA, else its resident memory now (for the report's
    memory curve against the estimate)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_reserved())
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PrintingLog:
    """An EventLog that also prints each event worth a line (ftc.core.events.describe) to the script's output."""

    def __init__(self, events: EventLog) -> None:
        self._events = events

    def write(self, type: str, message: str | None = None, **fields: Any) -> None:
        line = describe(self._events.write(type, message, **fields))
        if line and ranks.RANK == 0:  # one line per event, not one per process
            print(line, flush=True)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights count as their unpacked size, a ZeRO-3 parameter (built
    partitioned by zero.Init, its own tensor empty) as its whole size (ds_numel)."""
    trainable = total = 0
    for param in model.parameters():
        n = getattr(param, "ds_numel", None) or param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def parameter_dtypes(model: Any) -> dict[str, dict[str, int]]:
    """Parameters by dtype, trainable and frozen apart ({"trainable": {"float32": n}, "frozen": {...}}):
    what the planned precision left in each dtype (4-bit weights show as their uint8 storage)."""
    by: dict[str, dict[str, int]] = {"trainable": {}, "frozen": {}}
    for param in model.parameters():
        part = by["trainable" if param.requires_grad else "frozen"]
        dtype = str(param.dtype).removeprefix("torch.")
        part[dtype] = part.get(dtype, 0) + param.numel()
    return by


def report_parameters(model: Any, events: EventLog) -> None:
    trainable, total = count_parameters(model)
    share = 100 * trainable / total if total else 0.0
    message = f"trainable parameters: {trainable:,} of {total:,} ({share:.3f} %)"
    print(message, flush=True)
    events.write("params", message, trainable=trainable, total=total, dtypes=parameter_dtypes(model))


def generate_answers(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]],
                     max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """Greedy answers to each conversation's prompt (all turns but the final assistant one), in left-padded batches."""
    import torch

    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    device = next(model.parameters()).device
    answers: list[str] = []
    try:
        for start in range(0, len(conversations), batch_size):
            prompts = [tokenizer.apply_chat_template(m[:-1], tokenize=False, add_generation_prompt=True)
                       for m in conversations[start:start + batch_size]]
            inputs = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
            with torch.no_grad():
                output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            new = output[:, inputs["input_ids"].shape[1]:]
            answers += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
        if was_training:
            model.train()
    return answers


def compare_answers(conversations: list[list[dict[str, str]]], before: list[str], after: list[str],
                    events: EventLog) -> None:
    """Print references with the answers before and after training, and the exact-match rates."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    references = [m[-1]["content"].strip() for m in conversations]
    hits_before = sum(a == r for a, r in zip(before, references))
    hits_after = sum(a == r for a, r in zip(after, references))
    table = Table(title="held-out examples: base model vs fine-tuned", show_lines=False)
    for column in ("prompt", "expected", "before", "after"):
        table.add_column(column, overflow="fold")
    for messages, ref, b, a in zip(conversations, references, before, after):
        table.add_row(Text(messages[-2]["content"]), Text(ref), Text(b), Text(a, style="green" if a == ref else "red"))
    n = len(references)
    console = Console(width=160)
    console.print(table)
    message = (f"exact match on {n} held-out examples: before {hits_before}/{n} ({100 * hits_before / n:.0f} %), "
               f"after {hits_after}/{n} ({100 * hits_after / n:.0f} %)")
    console.print(message)
    events.write("compare", message, examples=n, exact_before=hits_before, exact_after=hits_after,
                 samples=[{"prompt": m[-2]["content"], "expected": r, "before": b, "after": a}
                          for m, r, b, a in zip(conversations, references, before, after)][:50])
