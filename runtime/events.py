"""events.jsonl: the one contract between a running script, `ftc run` and the monitor.

One JSON object per line, appended and flushed at once, each with `type`, `time` (Unix seconds)
and a human `message` where useful. Types written today: start, data, params, step, eval,
checkpoint, compare, warning, status (state = running | completed | failed | stopped).
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


def parse_events(text: str) -> list[dict[str, Any]]:
    """The events in a chunk of events.jsonl; a torn line (a killed writer) is skipped."""
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete event in the file (none if it does not exist yet)."""
    try:
        return parse_events(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []


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
    return None
