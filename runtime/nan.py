"""The NaN policy: a step whose gradients are NaN/inf is skipped (no weight update; under DeepSpeed ZeRO the engine
skips it itself and the policy reads its outcome); after `nan_patience` in a row (at
once for on_nan = "stop") training ends with a diagnosis that names the step's rows, asking `ftc run` to roll back to
the last good checkpoint with a lower learning rate (on_nan = "rollback", at most MAX_ROLLBACKS times) or stopping."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ftc.core import checkpoint as ckpt
from ftc.runtime import ranks
from ftc.runtime.outcome import NonFiniteSteps
from ftc.runtime.trainer import PrintingLog

MAX_ROLLBACKS = 2
"""NaN rollbacks per run (each halves the learning rate) before the run stops with a diagnosis."""
FP16_OVERFLOWS = 16
"""Steps in a row with inf gradients that fp16 loss scaling may take to calibrate (2**16 halved to 1)."""


class NanPolicy(TrainerCallback):  # type: ignore[misc]
    """See the module docstring. `attach(trainer)` records the micro-batches of each step, for the diagnosis."""

    def __init__(self, events: PrintingLog, run_dir: str | Path, *, on_nan: str, nan_patience: int,
                 last_good_step: int = 0) -> None:
        self.events = events
        self.on_nan, self.nan_patience = on_nan, nan_patience
        self.rollbacks = int(ckpt.read_overrides(run_dir).get("rollbacks", 0))
        self.nan_streak = 0
        self.last_good_step = last_good_step
        self.trainer: Any = None
        self._batches: list[list[dict[str, Any]]] = []
        self._step_batches: list[list[dict[str, Any]]] = []
        self._tokens_at_step = 0

    def attach(self, trainer: Any) -> None:
        """Record the micro-batches of each step (for the NaN diagnosis): the training dataloader gets a
        collator that keeps the rows it batches; evaluation keeps the plain one."""
        self.trainer = trainer
        plain = trainer.get_train_dataloader

        def recording(features: list[dict[str, Any]]) -> Any:
            self._batches.append(features)
            return collator(features)

        def get_train_dataloader() -> Any:
            nonlocal collator
            collator = trainer.data_collator
            trainer.data_collator = recording
            try:
                return plain()
            finally:
                trainer.data_collator = collator

        collator = trainer.data_collator
        trainer.get_train_dataloader = get_train_dataloader

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer is not None:
            n = getattr(self.trainer, "current_gradient_accumulation_steps", 1)
            self._step_batches, self._batches = self._batches[:n], self._batches[n:]
        self._tokens_at_step = state.num_input_tokens_seen or 0

    def _non_finite(self, model: Any) -> bool | None:
        """Whether this step's gradients were NaN/inf on any process (None: no gradients to judge). A skipped
        step is skipped here: the gradients are dropped, so AdamW leaves the parameters alone."""
        engine = getattr(self.trainer, "deepspeed", None)
        if engine is not None:
            # DeepSpeed keeps the gradients in its engine and has stepped already, inside backward (accelerate's
            # DeepSpeedEngineWrapper.backward calls engine.step()). ZeRO-2/3 skip an update whose global gradient
            # norm is not finite themselves (zero/stage_1_and_2.py, stage3.py step: overflow -> gradients
            # dropped, norm = inf; the norm and the flag are all-reduced): read the outcome
            norm = engine.get_global_grad_norm()
            bad = not engine.was_step_applied() or (norm is not None and not math.isfinite(float(norm)))
            return ranks.agree(bad)[0]
        params = [p for p in model.parameters() if p.grad is not None] if model is not None else []
        if not params:
            return None
        # an FSDP2 gradient is a DTensor: each process checks its own shard; under several processes one
        # rank's NaN must skip the step on every rank, or the others update and the replicas part ways
        local = [getattr(p.grad, "_local_tensor", p.grad) for p in params]
        (bad,) = ranks.agree(not bool(torch.stack([torch.isfinite(g).all() for g in local]).all()))
        if bad:
            for p in params:
                p.grad = None
        return bad

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step + 1
        bad = self._non_finite(model)
        if bad is None:
            return
        if not bad:
            self.nan_streak = 0
            self.last_good_step = step
            return
        self.nan_streak += 1
        rollbacks = self.rollbacks  # done by ftc run before this attempt (overrides.json)
        # fp16's loss scaler overflows on purpose while it calibrates (and skips those steps itself): only
        # a streak longer than its halvings from 2**16 down to 1 is a real NaN
        grace = FP16_OVERFLOWS if getattr(args, "fp16", False) else 0
        if (self.on_nan == "stop" and self.nan_streak > grace) or self.nan_streak >= self.nan_patience + grace:
            rollback = self.on_nan == "rollback" and rollbacks < MAX_ROLLBACKS
            what = (f"rolling back to the last good checkpoint (step {self.last_good_step} or before) with half the "
                    f"learning rate" if rollback else "stopping")
            message = (f"step {step}: NaN/inf gradients"
                       + (f" in {self.nan_streak} steps in a row" if self.nan_streak > 1 else "")
                       + f" (on_nan = {self.on_nan!r}" + (f", {rollbacks} rollback(s) done" if rollbacks else "")
                       + f"); {what}. " + self.diagnose(step))
            raise NonFiniteSteps(message, rollback=rollback, last_good_step=self.last_good_step)
        self.events.write("nan", f"step {step}: NaN/inf gradients; step skipped ({self.nan_streak} in a row, "
                          f"limit {self.nan_patience})", step=step, streak=self.nan_streak)

    def diagnose(self, step: int) -> str:
        """Which rows the failing step trained on, and which of them alone give a non-finite loss."""
        batches = self._step_batches
        if self.trainer is None or not batches:
            return "The rows of the step are unknown."
        features = [f for batch in batches for f in batch]
        dataset = self.trainer.train_dataset
        where: dict[tuple[int, ...], int] = {}
        try:
            for index, ids in enumerate(dataset["input_ids"]):
                where.setdefault(tuple(ids), index)
        except (KeyError, TypeError):
            pass
        rows = [where.get(tuple(f.get("input_ids", ())), -1) for f in features]
        # the Trainer counts the step's non-padding tokens: they must be the recorded rows' tokens
        seen = (self.trainer.state.num_input_tokens_seen or 0) - self._tokens_at_step
        exact = seen == sum(len(f.get("input_ids", ())) for f in features)
        bad = []
        model = self.trainer.model
        if any(hasattr(p, "ds_tensor") for p in model.parameters()):  # ZeRO-3: every forward gathers from all
            return (f"The step trained on rows {_rows(rows)} of the training split (no per-row check under ZeRO-3: "
                    "a forward on one process alone would wait for the others' weight partitions).")
        collator = self.trainer.data_collator
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for row, feature in zip(rows, features):
                    batch = collator([feature])
                    batch = {k: v.to(model.device) for k, v in batch.items() if hasattr(v, "to")}
                    loss = model(**batch).loss
                    if loss is not None and not torch.isfinite(loss):
                        bad.append(row)
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the original fault
            return f"The step trained on rows {_rows(rows)} of the training split (no per-row check: {exc})."
        finally:
            if was_training:
                model.train()
        text = (f"The step trained on rows {_rows(rows)} of the training split (indices after the validation split"
                + ("" if exact else "; the rows could not be matched to the step exactly, so some may be a "
                   "neighbouring step's") + "). ")
        if bad:
            return text + f"Alone, rows {_rows(bad)} give a non-finite loss: look at those examples."
        return (text + "None of them gives a non-finite loss alone, so the weights or optimizer diverged: lower "
                "train.learning_rate, raise train.warmup or lower train.max_grad_norm.")


def _rows(rows: list[int]) -> str:
    known = sorted({r for r in rows if r >= 0})
    text = ", ".join(map(str, known[:20])) + (" ..." if len(known) > 20 else "")
    unknown = sum(r < 0 for r in rows)
    return text + (f" (and {unknown} not found)" if unknown else "") if known else f"{len(rows)} unknown rows"
