"""events.jsonl -> RunState: what a run is doing, read incrementally. Pure: no Textual, no torch.

`ftc.runtime.events.EventTail` reads only the bytes appended since the last read, so a monitor can
poll a growing file cheaply. `RunState.apply` folds one event at a time; the monitor, `ftc runs`
and the tests share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.runtime.events import EventTail

FINAL_STATES = ("completed", "failed", "stopped")


@dataclass
class RunState:
    """Everything the monitor shows, folded from events."""

    state: str = "unknown"
    message: str = ""
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    started: float | None = None
    """Unix time of the first event."""
    updated: float | None = None
    """Unix time of the latest event."""
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    learning_rate: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_s: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    trainable_params: int | None = None
    total_params: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    output: str | None = None
    exact_match: tuple[int, int, int] | None = None
    """(examples, correct before, correct after) of the before/after comparison."""
    first_step: tuple[int, float] | None = None
    """(step, Unix time) of the first step event, for the pace of training."""
    events: int = 0

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state."""
        self.events += 1
        when = event.get("time")
        if isinstance(when, (int, float)):
            self.started = when if self.started is None else self.started
            self.updated = when
        kind = event.get("type")
        step = event.get("step")
        if isinstance(step, int):
            self.step = max(self.step, step) if kind == "step" else self.step
        if isinstance(event.get("total_steps"), int):
            self.total_steps = event["total_steps"]
        if kind == "start":
            self.config = dict(event.get("config") or {})
        elif kind == "status":
            self.state = str(event.get("state", self.state))
            self.message = str(event.get("message", ""))
            self.output = event.get("output", self.output)
        elif kind == "step" and isinstance(step, int):
            if self.first_step is None and isinstance(when, (int, float)):
                self.first_step = (step, when)
            if event.get("loss") is not None:
                self.train_loss.append((step, float(event["loss"])))
            if event.get("learning_rate") is not None:
                self.learning_rate.append((step, float(event["learning_rate"])))
            if event.get("tokens_per_s") is not None:
                self.tokens_per_s.append((step, float(event["tokens_per_s"])))
            if event.get("epoch") is not None:
                self.epoch = float(event["epoch"])
        elif kind == "eval" and isinstance(step, int) and event.get("loss") is not None:
            self.eval_loss.append((step, float(event["loss"])))
        elif kind == "checkpoint" and isinstance(step, int):
            self.checkpoints.append((step, str(event.get("path", ""))))
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "params":
            self.trainable_params = event.get("trainable")
            self.total_params = event.get("total")
        elif kind == "compare":
            self.exact_match = (int(event.get("examples", 0)), int(event.get("exact_before", 0)),
                                int(event.get("exact_after", 0)))

    def extend(self, events: list[dict[str, Any]]) -> RunState:
        for event in events:
            self.apply(event)
        return self

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def best_eval_loss(self) -> float | None:
        return min((loss for _, loss in self.eval_loss), default=None)

    @property
    def elapsed(self) -> float | None:
        """Seconds from the first to the latest event."""
        if self.started is None or self.updated is None:
            return None
        return self.updated - self.started

    def eta(self) -> float | None:
        """Seconds left at the pace of the steps so far (None before two step events or when done)."""
        if self.finished or self.total_steps is None or self.first_step is None or self.updated is None:
            return None
        first, at = self.first_step
        if self.step >= self.total_steps:
            return 0.0
        if self.step <= first:
            return None
        return (self.updated - at) / (self.step - first) * (self.total_steps - self.step)


def read_state(run_dir: str | os.PathLike[str]) -> RunState:
    """The state of a run directory, read once (a stopped or finished run, or a snapshot)."""
    return RunState().extend(EventTail(Path(run_dir) / "events.jsonl").read())
