"""The learning-rate range test's callback (FTC_LR_RANGE, set only by `ftc compile` for `learning_rate = "auto"`,
see ftc.compiler.lrrange): added to a run's callbacks only when the variable is set, so no training run carries it.

Each optimizer step trains at the next rate of a geometric sweep from `low` to `high` (every parameter group
scaled alike, so LoRA+'s ratio between groups stays); the step events record the rate and the loss. After the
first step the sweep is spread over as many steps as the time budget allows (`steps` at most, `min_steps` at
least). Training stops when the loss diverges (not finite, or its smoothed value, ftc.core.lrcurve's, over
`diverge` x the lowest), when the budget is spent, or after the last step; a `lr_range` event says which, and
whether the last step's gradients were not finite (its loss is then reported as inf)."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import torch
from transformers import TrainerCallback

from ftc.core.lrcurve import Smoother
from ftc.runtime.trainer import PrintingLog

ENV = "FTC_LR_RANGE"


def sweep() -> dict[str, float] | None:
    """The sweep FTC_LR_RANGE asks for (None when unset); ValueError when it cannot be read."""
    text = os.environ.get(ENV, "")
    if not text:
        return None
    try:
        asked = json.loads(text)
        values = {k: float(asked[k]) for k in ("low", "high", "steps", "min_steps", "budget_s", "diverge")}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{ENV}: cannot read {text[:80]!r} ({exc}); ftc compile sets it, do not set it by hand") from None
    if not 0 < values["low"] < values["high"] or values["min_steps"] < 2 or values["steps"] < values["min_steps"]:
        raise ValueError(f"{ENV}: needs 0 < low < high and 2 <= min_steps <= steps (got {text[:80]!r})")
    return values


class LrRangeTest(TrainerCallback):  # type: ignore[misc]
    """Placed before the events callback reads the optimizer's rate, so each step event has the rate it trained at."""

    def __init__(self, events: PrintingLog, asked: dict[str, float]) -> None:
        self.events, self.asked = events, asked
        self.steps = int(asked["steps"])
        self.base: list[float] | None = None
        self.best = math.inf
        self.smoother = Smoother()
        self.start = self.step_start = 0.0
        self.nonfinite = False

    def rate(self, index: int) -> float:
        """The rate of step `index` (0-based) of a sweep over self.steps steps."""
        low, high = self.asked["low"], self.asked["high"]
        return low * (high / low) ** (min(index, self.steps - 1) / (self.steps - 1))

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> None:
        self.step_start = time.perf_counter()
        if optimizer is None:
            return
        if self.base is None:  # the constant schedule's rates, the plan's rate in group 0
            self.base = [float(group["lr"]) for group in optimizer.param_groups]
        factor = self.rate(state.global_step) / self.base[0]
        for group, base in zip(optimizer.param_groups, self.base):
            group["lr"] = base * factor

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # the Trainer logs a NaN/inf loss as the mean of the steps before it (logging_nan_inf_filter), so a step
        # that blew up is seen here, in its gradients, before the NaN policy skips it
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        self.nonfinite = bool(grads) and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 1:  # spread the sweep over the steps the budget allows (the first is the slowest)
            seconds = max(time.perf_counter() - self.step_start, 1e-6)
            fits = int(self.asked["budget_s"] // seconds)
            self.steps = max(int(self.asked["min_steps"]), min(self.steps, fits))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = self.smoother.add(float(loss))
        self.best = min(self.best, loss) if math.isfinite(loss) else self.best
        elapsed = time.perf_counter() - self.start
        stopped = None
        if self.nonfinite or not math.isfinite(loss) or loss > self.asked["diverge"] * self.best:
            stopped = "diverged"
        elif state.global_step >= self.steps:
            stopped = "done"
        elif elapsed >= self.asked["budget_s"]:
            stopped = "budget"
        if stopped:
            control.should_training_stop = True
            self.events.write("lr_range", f"learning-rate range test: {stopped} after {state.global_step} steps",
                              stopped=stopped, steps=state.global_step, planned_steps=self.steps,
                              seconds=round(elapsed, 1), nonfinite=self.nonfinite)
