"""`ftc run`: compile if needed, lay out the run directory, execute train.py as a child process,
and show its progress from events.jsonl (the Textual monitor is a later issue)."""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ftc.compiler.compile import compile_spec
from ftc.compiler.errors import RunError
from ftc.runtime.events import EventLog, EventTail, read_events


# Errors the runtime helpers raise with a message for the user; their traceback is noise.
KNOWN_ERRORS = ("ftc.runtime.data.DataError: ", "ftc.runtime.bundled.BundledModelError: ",
                "ftc.runtime.methods.MethodError: ")


def new_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """runs/<name>/<YYYYmmdd-HHMMSS>, with a suffix when two runs start in the same second."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = root / name / stamp
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / name / f"{stamp}-{n}"
    return candidate


def _pump(stream: TextIO, log: TextIO, tail: deque[str], console: Console) -> None:
    for line in stream:
        log.write(line)
        log.flush()
        tail.append(line.rstrip("\n"))
        console.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


def run_spec(spec: str, *, run_dir: str | None = None, build_dir: str | None = None, tui: bool = True) -> int:
    """Compile `spec`, then run its script in a new run directory; returns the exit code."""
    console = Console(stderr=False, highlight=False)
    result = compile_spec(spec, build_dir)
    changed = result.write()
    console.print(f"compiled {result.source.display} -> {result.out_dir}/ "
                  f"({', '.join(changed) if changed else 'up to date'})")
    target = Path(run_dir) if run_dir else new_run_dir(result.plan.name)
    if (target / "events.jsonl").exists():
        raise RunError(f"{target} already holds a run; choose another --run-dir (or leave it out for a new one)")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.source.path, target / "spec.toml")
    for name in ("train.py", "plan.json", "plan.md"):
        shutil.copyfile(result.out_dir / name, target / name)

    events_path = target / "events.jsonl"
    events = EventLog(events_path)
    events.write("status", f"launching {target / 'train.py'}", state="starting", spec=result.source.display)
    console.print(f"run directory: {target}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",  # quiet, line-by-line output:
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # progress comes from events
    tail: deque[str] = deque(maxlen=25)
    started = time.monotonic()
    with (target / "train.log").open("w", encoding="utf-8") as log:
        child = subprocess.Popen([sys.executable, str(target / "train.py"), str(target)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)
        assert child.stdout is not None
        pump = threading.Thread(target=_pump, args=(child.stdout, log, tail, console), daemon=True)
        pump.start()
        try:
            _follow(child, events_path, console, live=console.is_terminal, tui=tui)
        except KeyboardInterrupt:
            console.print("interrupted: stopping the training process")
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            events.write("status", "stopped by the user", state="stopped")
            raise
        pump.join(timeout=5)
    code = child.returncode
    seen = read_events(events_path)
    final = next((e for e in reversed(seen) if e.get("type") == "status"), {})
    if code != 0 or final.get("state") != "completed":
        events.write("status", f"training process exited with code {code}", state="failed", exit_code=code)
        known = next((line.split(": ", 1)[1] for line in reversed(tail) if line.startswith(KNOWN_ERRORS)), None)
        if known:  # an error ftc's helpers raised on purpose: its message says what to fix
            raise RunError(f"{known}\n(training stopped with exit code {code}; full log: {target / 'train.log'})")
        last = "\n".join(f"  | {line}" for line in tail)
        raise RunError(f"training failed (exit code {code}); last lines of {target / 'train.log'}:\n{last}")
    _summary(console, seen, target, time.monotonic() - started)
    return 0


def _follow(child: subprocess.Popen[str], events_path: Path, console: Console, *, live: bool,
            tui: bool = False) -> None:
    """Keep a progress bar (terminals only) in step with the events file until the child exits;
    the child's own output, which already has a line per logging step, is echoed by `_pump`.
    In a terminal, unless --no-tui, the Textual monitor comes first; closing it leaves the child running (the
    progress bar then takes over), and `ftc monitor RUN_DIR` attaches again."""
    if live and tui and sys.stdin.isatty():  # the monitor reads keys from the terminal
        from ftc.tui.app import watch_child

        if watch_child(events_path.parent, child):
            console.print(f"monitor closed; training goes on (re-attach: ftc monitor {events_path.parent})")
    tail = EventTail(events_path)
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, disable=not live)
    task = None
    with progress:
        while True:
            exited = child.poll() is not None
            for event in tail.read():
                if event.get("type") in ("step", "status") and event.get("total_steps"):
                    if task is None:
                        task = progress.add_task("train", total=event["total_steps"], loss="")
                    progress.update(task, completed=event.get("step", 0),
                                    loss=f"loss {event['loss']:.4f}" if "loss" in event else "")
            if exited:
                return
            time.sleep(0.5)


def _summary(console: Console, events: list[dict[str, Any]], target: Path, seconds: float) -> None:
    steps = [e for e in events if e.get("type") == "step"]
    evals = [e for e in events if e.get("type") == "eval"]
    final = next(e for e in reversed(events) if e.get("type") == "status")
    table = Table(title="run finished", show_header=False)
    table.add_row("steps", str(final.get("step")))
    if steps:
        table.add_row("training loss", f"{steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f}")
    if evals:
        table.add_row("validation loss", f"{evals[0]['loss']:.4f} -> {evals[-1]['loss']:.4f}")
    compare = next((e for e in events if e.get("type") == "compare"), None)
    if compare:
        n = compare["examples"]
        table.add_row("held-out exact match", f"{compare['exact_before']}/{n} -> {compare['exact_after']}/{n}")
    table.add_row("time", f"{seconds:.0f} s")
    table.add_row("result", str(final.get("output")))
    table.add_row("events", str(target / "events.jsonl"))
    console.print(table)
