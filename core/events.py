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
  metrics     [eval] metrics before (the base) and after training: before, after ({name: value}), generation
              (examples, max_new_tokens, decoding), examples (validation rows the loss is on), path (eval.json),
              regressions (gated metrics that got worse; the run then ends failed with error "eval_gate"),
              main (the score `ftc runs` shows: ftc.core.metrics.main_metric)
The script's last status (written by ftc.runtime.outcome.RunOutcome when it ends other than completed) says
why, and `ftc run` decides from it alone:
  state       exiting (an exit ftc run recovers from: 75 out of memory, 76 NaN rollback), failed, stopped
  error       oom | nan | stopped | disk_full | interrupted | data | bundled_model | method | run_dir | eval_gate |
              crash
  exit_code   the code the script exits with (75, 76, 77 resumable stop, 130 interrupted, 1 otherwise)
  message     what happened and what to do (for "crash", the exception; its traceback is in the log)
  step        the last completed step; failed_step (oom, nan), micro_batch_size (oom), last_good_step (nan)
A status with state "stopped" carries `reason` and `checkpoint` (what a resume continues from). `ftc run`
writes a "failed" status with error "crash" when the script died without one (killed, or a signal).
"""

from __future__ import annotations

import json
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


class EventTail:
    """Incremental reader of one events.jsonl (which may not exist yet)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        """The complete events appended since the last call."""
        try:
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" after a complete line, else a line still being written
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # a line torn by a crash, then continued by a restarted writer
            if isinstance(event, dict):
                events.append(event)
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
