"""events.jsonl -> RunState: what a run is doing, read incrementally. Pure: no Textual, no torch.

`ftc.runtime.events.EventTail` reads only the bytes appended since the last read, so a monitor can
poll a growing file cheaply. `RunState.apply` folds one event at a time; the monitor, `ftc runs`
and the tests share it.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.runtime.events import EventTail, describe

FINAL_STATES = ("completed", "failed", "stopped")
LOG_LINES = 1000
"""Lines of the event log kept in memory (warnings are all kept in `warnings` as well)."""

# Kinds of trouble a warning can report, recognised by words in its message or its event type, so the
# monitor can count them; any other warning is shown and highlighted all the same.
WARNING_KINDS = {
    "oom": ("out of memory", "oom"),
    "nan": ("non-finite", "nan loss", "nan ", "inf loss"),
    "resume": ("resum",),
}


def warning_kind(event: dict[str, Any]) -> str:
    """'oom', 'nan', 'resume' or 'other' for a warning-like event (by its type, then its message)."""
    kind = str(event.get("type", ""))
    for name, words in WARNING_KINDS.items():
        if kind == name or kind.startswith(name + "_"):
            return name
    text = f" {str(event.get('message', '')).lower()} "
    for name, words in WARNING_KINDS.items():
        if any(word in text for word in words):
            return name
    return "other"


@dataclass(frozen=True)
class LogLine:
    """One line of the event log: `level` is info, warning or error; `step` when the event had one."""

    level: str
    text: str
    time: float | None = None
    step: int | None = None


def log_line(event: dict[str, Any]) -> LogLine | None:
    """The log line of an event; every type gets one (unknown types by their message), except the step
    events, which the charts show (they get a line only every `step` event is wanted: see RunState)."""
    kind = str(event.get("type", "?"))
    when = event.get("time") if isinstance(event.get("time"), (int, float)) else None
    step = event.get("step") if isinstance(event.get("step"), int) else None
    level = "info"
    if kind == "warning" or event.get("level") == "warning" or (kind != "status" and warning_kind(event) != "other"):
        level = "warning"
    if kind == "status" and event.get("state") == "failed" or event.get("level") == "error":
        level = "error"
    try:
        text = describe(event)
    except (KeyError, TypeError, ValueError):  # a known type missing a field: fall back to the generic line
        text = None
    if kind == "warning":
        text = str(event.get("message", ""))
    if text is None:
        message = event.get("message")
        if kind == "status":
            state = event.get("state", "?")
            text = f"{state}: {message}" if message else str(state)
        elif kind == "start":
            text = str(message or "training script started")
        elif message:
            text = f"{kind}: {message}" if kind not in ("data", "params", "compare", "control") else str(message)
        else:
            fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time"))
            text = f"{kind}: {fields}" if fields else kind
    return LogLine(level, text, when, step)


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
    warning_counts: dict[str, int] = field(default_factory=dict)
    """How many warnings of each kind (oom, nan, resume, other) the run reported."""
    log: deque[LogLine] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    """The latest event-log lines (steps excluded: the charts show them)."""
    log_count: int = 0
    """Lines ever added to `log` (a reader that saw n of them appends the last log_count - n)."""
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
        if kind != "step":
            line = log_line(event)
            if line is not None:
                self.log.append(line)
                self.log_count += 1
                if line.level == "warning":
                    which = warning_kind(event)
                    self.warning_counts[which] = self.warning_counts.get(which, 0) + 1
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
    def best_perplexity(self) -> float | None:
        best = self.best_eval_loss
        return math.exp(min(best, 700.0)) if best is not None else None

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


def read_plan(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's plan.json (copied in by `ftc run`), or {} when it is missing or unreadable."""
    try:
        plan = json.loads((Path(run_dir) / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return plan if isinstance(plan, dict) else {}
