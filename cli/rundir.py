"""Taking a run directory for `ftc run`: never a folder of the user's files by accident, never one another `ftc run`
is writing, and, when the `ftc run` that wrote it died and left its training process behind, only after that
process has saved a checkpoint and stopped (ftc.runtime.orphan), so that the run resumes from it."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ftc.core import checkpoint as ckpt
from ftc.core import control
from ftc.core.errors import RunError

WAIT_ENV = "FTC_ORPHAN_WAIT"
"""Seconds `ftc run` waits for a training process left by a dead `ftc run` to save and stop (default below)."""
DEFAULT_WAIT_S = 300.0


def check_folder(target: Path, *, force: bool) -> None:
    """Refuse a --run-dir that exists, is not a run (no events.jsonl) and holds files, unless `force`; even then,
    refuse it while it holds any name ftc writes (ckpt.ENTRIES), so no file of the user's is ever replaced."""
    if not target.is_dir() or (target / "events.jsonl").exists():
        return
    try:
        names = sorted(entry.name for entry in os.scandir(target) if not _ftc_request(target, entry.name))
    except OSError as exc:
        raise RunError(f"--run-dir {target} cannot be read ({exc.strerror}); choose a folder you can write") from None
    if not names:
        return
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    clashes = [name for name in names if ckpt.is_entry(name)]
    if not force:
        raise RunError(f"--run-dir {target} is a folder that is not an ftc run (no events.jsonl) and holds files "
                       f"({shown}); choose a new or empty folder, or pass --force to put the run there beside them"
                       + (f" (after moving away {', '.join(clashes)}, which ftc would write)" if clashes else ""))
    if clashes:
        raise RunError(f"--run-dir {target} is not an ftc run and holds {', '.join(clashes)}, which ftc run would "
                       "write; --force never replaces a file of yours: move them away, or choose another --run-dir")


def _ftc_request(target: Path, name: str) -> bool:
    """The lock, or control/ holding only requests made before the run began (`touch DIR/control/checkpoint`)."""
    if name == ckpt.LOCK:
        return True
    folder = control.control_dir(target)
    return name == folder.name and folder.is_dir() and set(os.listdir(folder)) <= set(control.ACTIONS)


def lock(target: Path, console: Console) -> ckpt.RunLock:
    """The run directory's lock, taken; waits (bounded) for a training process whose `ftc run` died."""
    run_lock = ckpt.RunLock(target)
    try:
        run_lock.acquire()
        return run_lock
    except BlockingIOError as exc:
        holder = run_lock.holder()
        if ckpt.pid_alive(holder.get("pid")) or "child" not in holder:
            raise RunError(f"{target} is being written by another ftc run ({exc}); wait for it to finish, stop it "
                           f"(touch {target}/control/stop), or choose another --run-dir") from None
    supervisor, child = holder["pid"], holder["child"]
    bound = _bound()
    console.print(f"{escape(str(target))}: the ftc run that wrote it (pid {supervisor}) is gone, and its training "
                  f"process (pid {child}) is saving a checkpoint and stopping; waiting for it (up to {bound:.0f} s, "
                  f"{WAIT_ENV} changes this)", soft_wrap=True)
    started = time.monotonic()
    while time.monotonic() - started < bound:
        time.sleep(0.5)
        try:
            run_lock.acquire()
        except BlockingIOError:
            continue
        waited = time.monotonic() - started
        console.print(f"the training process (pid {child}) ended after {waited:.0f} s", soft_wrap=True)
        return run_lock
    raise RunError(f"{target} is still held by the training process (pid {child}) {bound:.0f} s after its ftc run "
                   f"(pid {supervisor}) died; it has not stopped. See what it does (ps -p {child}; tail "
                   f"{target}/train.log), stop it (kill {child}: it saves a checkpoint; kill -9 {child} loses the "
                   f"steps since the last one) or wait, then run ftc run again")


def _bound() -> float:
    value = os.environ.get(WAIT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_WAIT_S
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 86400:
        raise RunError(f"{WAIT_ENV}={value!r} is not a number of seconds from 0 to 86400 (unset it for "
                       f"{DEFAULT_WAIT_S:.0f})")
    return seconds
