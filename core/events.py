"""events.jsonl: the one contract between a running script, `ftc run` and the monitor.

One JSON object per line, appended and flushed at once, each with `type`, `time` (Unix seconds)
and a human `message` where useful. Types written today: start, data, params, step, eval,
checkpoint, compare, warning, control, status (state = starting | running | stopping | completed |
exiting | failed | stopped), and the recovery events of the runtime (ftc.runtime.guard and `ftc run`):

  checkpoint  a complete checkpoint was published: step, path, eval_loss (at that step, or null),
              removed (names of the checkpoints deleted to keep the last K and the best)
  resume      training continues from a checkpoint: step, path. Steps after it in the file were
              done again: a reader keeps, for each step, the last event written
  fault       a fault injected by FTC_INJECT fired: kind, step (tests only)
  oom         out of memory: step, micro_batch_size
  retry       `ftc run` restarts the script after a fault: reason ("oom" | "nan"), micro_batch_size,
              grad_accum, lr_scale (and learning_rate after "nan": what CONFIG's LEARNING_RATE becomes),
              resume (the checkpoint it restarts from, or null)
  nan         NaN/inf gradients in a step: step, streak (the step was skipped), or rollback = true
              with last_good_step when the on_nan policy rolls back
  early_stop  validation loss stopped improving: step, best_loss, best_step
  disk_full   not enough free space for a checkpoint, or a write failed with ENOSPC: step
  warning     with kind "supervisor_gone" and supervisor (its pid): the script's `ftc run` died; the script
              saves a checkpoint and stops (ftc.runtime.orphan)
  metrics     [eval] metrics before (the base) and after training: before, after ({name: value}), generation
              (examples, max_new_tokens, decoding), examples (validation rows the loss is on), path (eval.json),
              regressions (gated metrics that got worse; the run then ends failed with error "eval_gate"),
              main (the score `ftc runs` shows: ftc.core.metrics.main_metric)
The script's last status (written by ftc.runtime.outcome.RunOutcome when it ends other than completed) says
why, and `ftc run` decides from it alone:
  state       exiting (an exit ftc run recovers from: 75 out of memory, 76 NaN rollback), failed, stopped
  error       oom | nan | stopped | disk_full | interrupted | data | bundled_model | method | run_dir | eval_gate |
              kernel (a planned CUDA kernel package does not import: ftc.runtime.kernels) | crash
  exit_code   the code the script exits with (75, 76, 77 resumable stop, 130 interrupted, 1 otherwise)
  message     what happened and what to do (for "crash", the exception; its traceback is in the log)
  step        the last completed step; failed_step (oom, nan), micro_batch_size (oom), last_good_step (nan)
Step and eval events of a preference objective also carry TRL's rewards (averaged over the logging steps):
reward_chosen, reward_rejected, reward_margin (chosen - rejected) and reward_accuracy (share of pairs whose
chosen reward is higher).
A status with state "stopped" carries `reason` and `checkpoint` (what a resume continues from). `ftc run`
writes a "failed" status with error "crash" when the script died without one (killed, or a signal).

Readers get events only through `EventTail` (and `read_events`), which checks each line against
FIELD_TYPES once: a line that is not a JSON object with a string `type`, or whose known fields have
the wrong type, is skipped and counted (`EventTail.skipped`, `EventTail.problems`), so no reader
meets a string loss, a NaN time or a list config.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any


class EventLog:
    """Appends events to `path` (created with its folder); safe to reopen after a crash."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type: str, message: str | None = None, **fields: Any) -> dict[str, Any]:
        event: dict[str, Any] = {"type": type, "time": round(time.time(), 3)}
        if message is not None:
            event["message"] = message
        event.update(fields)
        line = json.dumps(event, ensure_ascii=False, default=str)
        with self.path.open("a", encoding="utf-8") as handle:  # reopened per event: a line is never half-buffered
            handle.write(line + "\n")
            handle.flush()
        return event


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_INT


def _real(value: Any) -> bool:
    return isinstance(value, float) or _int(value)


MAX_INT = 2**63
_INT = (_int, "an integer")
_REAL = (_real, "a number")
_TEXT = (lambda v: isinstance(v, str), "a string")
FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "type": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
    "time": (lambda v: _real(v) and math.isfinite(v), "a finite number (Unix seconds)"),
    **dict.fromkeys(("step", "total_steps", "micro_batch_size", "grad_accum", "examples", "exact_before",
                     "exact_after", "trainable", "total", "last_good_step", "failed_step", "streak", "exit_code",
                     "best_step", "free_bytes", "needed_bytes"), _INT),
    **dict.fromkeys(("loss", "eval_loss", "learning_rate", "tokens_per_s", "epoch", "best_loss", "lr_scale",
                     "grad_norm", "reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy"), _REAL),
    **dict.fromkeys(("message", "state", "path", "error", "reason", "kind", "output", "level", "spec", "resume",
                     "checkpoint"), _TEXT),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "removed": (lambda v: isinstance(v, list), "a list"),
    "rollback": (lambda v: isinstance(v, bool), "true or false"),
}
"""The fields whose type readers rely on, with what each must be (null is allowed for all but `type`);
other fields are free."""


def event_problem(event: Any) -> str | None:
    """Why a parsed line is not an event readers can use (None when it is): every reader of events.jsonl
    gets its events through `EventTail`, which skips such lines, so the fields of FIELD_TYPES can be trusted."""
    if not isinstance(event, dict):
        return f"not a JSON object (got {type(event).__name__})"
    if "type" not in event:
        return "no `type` field"
    for name, (ok, what) in FIELD_TYPES.items():
        value = event.get(name)
        if (value is not None or name == "type") and not ok(value):
            return f"`{name}` must be {what} (got {json.dumps(value, default=str)[:40]})"
    return None


class EventTail:
    """Incremental reader of one events.jsonl (which may not exist yet). Lines that are not valid events (torn
    by a crash, or not written by ftc) are skipped: `skipped` counts them, `problems` says why (the first few,
    as `events.jsonl:LINE: reason`)."""

    MAX_PROBLEMS = 20

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""
        self._line = 0
        self.skipped = 0
        self.problems: list[str] = []

    def read(self) -> list[dict[str, Any]]:
        """The complete, valid events appended since the last call."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line, else a line still being written
        events = []
        for line in lines:
            self._line += 1
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except (ValueError, RecursionError) as exc:  # torn by a crash, then continued by a restarted writer
                problem: str | None = f"not JSON ({type(exc).__name__})"
            else:
                problem = event_problem(event)
            if problem is None:
                events.append(event)
                continue
            self.skipped += 1
            if len(self.problems) < self.MAX_PROBLEMS:
                self.problems.append(f"{self.path.name}:{self._line}: {problem}")
        return events


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete event in the file (none if it does not exist yet)."""
    return EventTail(path).read()

def describe(event: dict[str, Any]) -> str | None:
    """One line for a person, for the events worth a line (None for the rest)."""
    kind = event.get("type")
    if kind == "step":
        parts = [f"step {event['step']}/{event.get('total_steps', '?')}", f"loss {event['loss']:.4f}"]
        if event.get("learning_rate") is not None:
            parts.append(f"lr {event['learning_rate']:.2e}")
        if event.get("tokens_per_s"):
            parts.append(f"{event['tokens_per_s']:,.0f} tok/s")
        if event.get("reward_margin") is not None:
            parts.append(f"margin {event['reward_margin']:.3f}")
        if event.get("reward_accuracy") is not None:
            parts.append(f"pref acc {100 * event['reward_accuracy']:.0f} %")
        return "  ".join(parts)
    if kind == "eval":
        return f"step {event['step']}: validation loss {event['loss']:.4f}"
    if kind == "checkpoint":
        return f"checkpoint at step {event['step']}"
    if kind == "warning":
        return f"warning: {event.get('message')}"
    if kind in ("resume", "fault", "oom", "retry", "nan", "early_stop", "disk_full", "control", "metrics"):
        return str(event.get("message"))
    return None
