"""Requests to a running training script, made through files in RUN_DIR/control/.

The monitor (or a person: `touch RUN_DIR/control/checkpoint`) creates a file named after the
action; the script's EventsCallback looks at the folder after every optimizer step, acts, and
removes the file. Files, not signals, so that the request survives the monitor closing, works the
same over SSH and in tests, and needs no process id. Pure standard library.
"""

from __future__ import annotations

import os
from pathlib import Path

ACTIONS = ("checkpoint", "stop")
"""checkpoint: save one now and go on; stop: save one and end training gracefully."""


def control_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / "control"


def request(run_dir: str | os.PathLike[str], action: str) -> Path:
    """Ask the script training in `run_dir` to perform `action` after its current step."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}; one of {', '.join(ACTIONS)}")
    folder = control_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / action
    temp = folder / f".{action}.{os.getpid()}"
    temp.write_text("", encoding="utf-8")
    os.replace(temp, path)  # appears whole or not at all
    return path


def take(run_dir: str | os.PathLike[str]) -> set[str]:
    """The pending actions, removed from the folder (each is acted on once)."""
    folder = control_dir(run_dir)
    try:
        names = [entry.name for entry in os.scandir(folder)]
    except FileNotFoundError:
        return set()
    taken = set()
    for name in names:
        if name in ACTIONS:
            try:
                os.unlink(folder / name)
            except FileNotFoundError:
                continue  # another reader took it
            taken.add(name)
    return taken
