"""events.jsonl -> RunState: what a run is doing, read incrementally. Pure: no Textual, no torch.

`ftc.core.events.EventTail` reads only the bytes appended since the last read, so a monitor can
poll a growing file cheaply. `RunState.apply` folds one event at a time; the monitor, `ftc runs`
and the tests share it.

The runtime's recovery events (the contract is in ftc.core.events) fold as `RunState._resume`, the
`checkpoint` branch of `RunState.apply` and `warning_kind` say.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.core.events import EventTail, describe
from ftc.core.text import printable

FINAL_STATES = ("completed", "failed", "stopped")
LOG_LINES = 1000
"""Lines of the event log kept in memory (warnings are all kept in `warnings` as well)."""

# The runtime's recovery events (ftc.core.events) and the kind of trouble each one counts as. `retry` and
# `fault` are shown as warnings but not counted: a retry is `ftc run`'s answer to the `oom` or `nan` event before
# it, and a fault is the injection (tests only) that caused the event after it.
TROUBLE_TYPES = {"oom": "oom", "resume": "resume", "early_stop": "early_stop", "disk_full": "disk_full"}
UNCOUNTED_WARNINGS = ("retry", "fault")
# Unknown event types: recognised by their type's name, then by words in their message, so that a new kind of
# trouble is still highlighted and counted before the monitor learns its shape.
WARNING_KINDS = {"oom": ("out of memory", "oom"), "nan": ("non-finite", "nan loss", "nan ", "inf loss"),
                 "resume": ("resum",)}
KNOWN_TYPES = frozenset({"start", "data", "params", "step", "eval", "checkpoint", "compare", "metrics", "warning",
                         "control", "status", "nan", *TROUBLE_TYPES, *UNCOUNTED_WARNINGS})


def warning_kind(event: dict[str, Any]) -> str | None:
    """What trouble an event reports, for the counts: 'oom', 'nan' (a skipped step), 'rollback', 'resume',
    'early_stop', 'disk_full', 'other' (a plain warning), or None (not trouble, or not counted)."""
    kind = str(event.get("type", ""))
    if kind in TROUBLE_TYPES:
        return TROUBLE_TYPES[kind]
    if kind == "nan":
        return "rollback" if event.get("rollback") else "nan"
    if kind == "warning":
        return "other"  # the runtime's warnings are about the data, the model or a resume: never an OOM or NaN
    if kind in KNOWN_TYPES:
        return None
    for name in WARNING_KINDS:
        if kind == name or kind.startswith(name + "_"):
            return name
    text = f" {str(event.get('message', '')).lower()} "
    for name, words in WARNING_KINDS.items():
        if any(word in text for word in words):
            return name
    return "other" if event.get("level") == "warning" else None


@dataclass(frozen=True)
class LogLine:
    """One line of the event log: `level` is info, warning or error; `step` when the event had one."""

    level: str
    text: str
    step: int | None = None


def log_line(event: dict[str, Any]) -> LogLine:
    """The log line of an event; every type gets one (unknown types by their message), except the step
    events, which the charts show (they get a line only every `step` event is wanted: see RunState)."""
    kind = str(event.get("type", "?"))
    step = event.get("step") if isinstance(event.get("step"), int) else None
    level = "info"
    if kind in UNCOUNTED_WARNINGS or event.get("level") == "warning" or warning_kind(event) is not None:
        level = "warning"
    if kind == "status" and event.get("state") == "failed" or event.get("level") == "error":
        level = "error"
    try:
        text = describe(event)
    except (KeyError, TypeError, ValueError):  # a known type missing a field: fall back to the generic line
        text = None
    if text == "None" and event.get("message") is None:  # a recovery event without its message
        text = None
    if kind == "warning":
        text = str(event.get("message", ""))
    if kind == "checkpoint" and text is not None and event.get("removed"):
        text += f" (removed {', '.join(map(str, event['removed']))})"
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
    return LogLine(level, printable(text, line=True), step)


@dataclass
class RunState:
    """Everything the monitor shows, folded from events."""

    state: str = "unknown"
    message: str = ""
    step: int = 0
    """The latest step done; after a resume, the checkpoint's step until the steps after it are done again."""
    total_steps: int | None = None
    epoch: float | None = None
    started: float | None = None
    """Unix time of the first event."""
    updated: float | None = None
    """Unix time of the latest event."""
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    """(step, value) points, one per step: a step done again after a resume replaces the earlier point."""
    eval_loss: list[tuple[int, float]] = field(default_factory=list)
    learning_rate: list[tuple[int, float]] = field(default_factory=list)
    tokens_per_s: list[tuple[int, float]] = field(default_factory=list)
    reward_margin: list[tuple[int, float]] = field(default_factory=list)
    """Preference objectives: TRL's chosen - rejected reward, and the share of pairs it ranks right."""
    reward_accuracy: list[tuple[int, float]] = field(default_factory=list)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)
    """(step, path) of the checkpoints the run keeps: without those it reported `removed` or a resume left behind."""
    warnings: list[str] = field(default_factory=list)
    warning_counts: dict[str, int] = field(default_factory=dict)
    """How many times each kind of trouble happened (see `warning_kind`: oom, nan, rollback, resume, early_stop,
    disk_full, other)."""
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
    metrics_before: dict[str, float] = field(default_factory=dict)
    """[eval] metrics of the base model (the `metrics` event), by score name."""
    metrics_after: dict[str, float] = field(default_factory=dict)
    main_metric: str | None = None
    """The score that sums the run up (ftc.core.metrics.main_metric)."""
    first_step: tuple[int, float] | None = None
    """(step, Unix time) of the first step event, for the pace of training."""
    events: int = 0
    skipped: list[str] = field(default_factory=list)
    """Why lines of events.jsonl were skipped (`events.jsonl:LINE: reason`, the first few; see EventTail)."""
    skipped_count: int = 0

    def read(self, tail: EventTail) -> RunState:
        """Fold the new events of `tail`, and note the lines it skipped."""
        self.extend(tail.read())
        self.skipped, self.skipped_count = list(tail.problems), tail.skipped
        return self

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one event into the state."""
        self.events += 1
        when = event.get("time")
        if isinstance(when, (int, float)):
            self.started = when if self.started is None else self.started
            self.updated = when
        kind = event.get("type")
        step = event.get("step")
        if isinstance(event.get("total_steps"), int):
            self.total_steps = event["total_steps"]
        if kind != "step":
            self.log.append(log_line(event))
            self.log_count += 1
            which = warning_kind(event)
            if which is not None:
                self.warning_counts[which] = self.warning_counts.get(which, 0) + 1
        if kind == "start":
            self.config = dict(event.get("config") or {})
        elif kind == "status":
            self.state = str(event.get("state", self.state))
            self.message = str(event.get("message", ""))
            self.output = event.get("output", self.output)
        elif kind == "resume" and isinstance(step, int):
            self._resume(step, when)
        elif kind == "step" and isinstance(step, int):
            self._step(event, step, when)
        elif kind == "eval" and isinstance(step, int) and event.get("loss") is not None:
            if self.eval_loss and self.eval_loss[-1][0] >= step:  # evaluated again: the last one counts
                self.eval_loss = [point for point in self.eval_loss if point[0] < step]
            self.eval_loss.append((step, float(event["loss"])))
        elif kind == "checkpoint" and isinstance(step, int):
            removed = event.get("removed")
            gone = {str(name) for name in removed} if isinstance(removed, list) else set()
            self.checkpoints = [(s, path) for s, path in self.checkpoints
                                if s != step and Path(path).name not in gone]
            self.checkpoints.append((step, str(event.get("path", ""))))
        elif kind == "warning":
            self.warnings.append(str(event.get("message", "")))
        elif kind == "params":
            self.trainable_params = event.get("trainable")
            self.total_params = event.get("total")
        elif kind == "metrics":
            self.metrics_before = dict(event.get("before") or {})
            self.metrics_after = dict(event.get("after") or {})
            self.main_metric = event.get("main") or next(iter(self.metrics_after), None)
        elif kind == "compare":
            self.exact_match = (int(event.get("examples") or 0), int(event.get("exact_before") or 0),
                                int(event.get("exact_after") or 0))

    def _resume(self, step: int, when: Any) -> None:
        """Training goes on from the checkpoint at `step`: the steps after it are done again, and the events
        they write replace the ones before (the checkpoints after it were discarded or are written again)."""
        self._rewind(step + 1)
        self.checkpoints = [(s, path) for s, path in self.checkpoints if s <= step]
        self.step = step
        if isinstance(when, (int, float)):
            self.first_step = (step, when)  # the pace since the resume: the time lost before it is not a step's

    def _step(self, event: dict[str, Any], step: int, when: Any) -> None:
        if step <= self.step:  # done again without a resume event (a restart from the start): the last one counts
            self._rewind(step)
            self.first_step = None
        self.step = step
        if self.first_step is None and isinstance(when, (int, float)):
            self.first_step = (step, when)
        for name, series in (("loss", self.train_loss), ("learning_rate", self.learning_rate),
                             ("tokens_per_s", self.tokens_per_s), ("reward_margin", self.reward_margin),
                             ("reward_accuracy", self.reward_accuracy)):
            if event.get(name) is not None:
                series.append((step, float(event[name])))
        if event.get("epoch") is not None:
            self.epoch = float(event["epoch"])

    def _rewind(self, step: int) -> None:
        """Forget the points at `step` and after: they are being done again."""
        for name in ("train_loss", "learning_rate", "tokens_per_s", "eval_loss", "reward_margin", "reward_accuracy"):
            points = getattr(self, name)
            if points and points[-1][0] >= step:
                setattr(self, name, [point for point in points if point[0] < step])

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
    return RunState().read(EventTail(Path(run_dir) / "events.jsonl"))


PLAN_SECTIONS = ("settings", "memory", "key_settings")
PLAN_TEXTS = ("spec", "method", "name")


def read_plan(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's plan.json (copied in by `ftc run`), or {} when it is missing or unreadable; the parts the
    monitor shows keep their types (sections are objects, memory and budget numbers, names strings) or are
    left out, so a broken or hand-edited plan.json never stops the monitor."""
    try:
        plan = json.loads((Path(run_dir) / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(plan, dict):
        return {}
    for name in PLAN_SECTIONS:
        if not isinstance(plan.get(name), dict):
            plan.pop(name, None)
    for name in PLAN_TEXTS:
        if name in plan and not isinstance(plan[name], str):
            del plan[name]
    if "memory" in plan:
        plan["memory"] = {k: v for k, v in plan["memory"].items() if _number(v)}
    if not _number(plan.get("budget")):
        plan.pop("budget", None)
    return plan


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
