"""A training process never outlives its `ftc run` unnoticed.

`ftc run` puts its process id in FTC_SUPERVISOR_PID. When that process dies (kill -9, an SSH drop, the OOM killer,
a scheduler killing its process group: the script runs in a session of its own and survives all of these), the
script notices, sends its output to RUN_DIR/train.log (nobody reads the pipe any more), writes a warning event, and
stops as on SIGTERM: it finishes the current step, saves a checkpoint and exits 77, releasing the run directory's
lock. An `ftc run` started meanwhile waits for that and then resumes.

How it notices: on Linux, a parent-death signal (prctl PR_SET_PDEATHSIG, SIGHUP) when `ftc run` is the parent; and
everywhere a thread that looks every second whether the supervisor still runs, which also covers a script started by
a launcher (torchrun, accelerate) whose parent is the launcher, not `ftc run`. Pure standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from ftc.core import checkpoint as ckpt
from ftc.core.events import EventLog

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 1.0


def supervisor_pid() -> int | None:
    """The id of the `ftc run` supervising this process, from FTC_SUPERVISOR_PID (None when run on its own)."""
    value = os.environ.get(ckpt.SUPERVISOR_ENV, "")
    return int(value) if value.isdigit() and int(value) not in (0, os.getpid()) else None


def watch(events: EventLog, run_dir: str | os.PathLike[str], began: Callable[[], bool]) -> threading.Thread | None:
    """Stop this script when its supervisor dies (see the module docstring); `began()` says whether training has
    begun (before, there is nothing to save; after the stop handler is gone, the result is being saved)."""
    supervisor = supervisor_pid()
    if supervisor is None:
        return None
    gone = threading.Event()
    direct = os.getppid() == supervisor
    if direct and sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread():
        def on_parent_death(signum: int, frame: FrameType | None) -> None:
            _detach_output(Path(run_dir) / "train.log")  # here, before the next print meets the broken pipe
            gone.set()  # the thread does the rest

        signal.signal(signal.SIGHUP, on_parent_death)
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGHUP), 0, 0, 0)

    def poll() -> None:
        while not gone.wait(POLL_S):
            if (direct and os.getppid() != supervisor) or not ckpt.pid_alive(supervisor):
                break
        _stop(events, Path(run_dir), supervisor, began)

    thread = threading.Thread(target=poll, name="ftc-supervisor-watch", daemon=True)
    thread.start()
    return thread


def _phase(began: Callable[[], bool]) -> str:
    """training (a stop handler is installed: it saves and stops), loading (Ctrl-C ends it), waiting (neither
    yet: loading with SIGINT ignored) or finishing (training is over; the result is being saved)."""
    handler = signal.getsignal(signal.SIGTERM)
    if callable(handler) and handler is not signal.default_int_handler:
        return "training"
    if began():
        return "finishing"
    return "loading" if signal.getsignal(signal.SIGINT) is signal.default_int_handler else "waiting"


def _stop(events: EventLog, run_dir: Path, supervisor: int, began: Callable[[], bool]) -> None:
    """Output to train.log, a warning event, then stop the way the script's phase allows."""
    _detach_output(run_dir / "train.log")
    phase = _phase(began)
    then = {"training": "saving a checkpoint after the current step and stopping",
            "loading": "stopping before training begins (nothing to save yet)",
            "waiting": "stopping once training begins", "finishing": "the result is being saved, then it ends"}[phase]
    events.write("warning", f"ftc run (pid {supervisor}) that supervised this run is gone: {then}; "
                 f"`ftc run SPEC --run-dir {run_dir}` resumes it", kind="supervisor_gone", supervisor=supervisor)
    print(f"ftc run (pid {supervisor}) is gone: {then}", flush=True)
    while phase == "waiting":
        time.sleep(POLL_S)
        phase = _phase(began)
    if phase == "training":
        os.kill(os.getpid(), signal.SIGTERM)  # the stop handler (ftc.runtime.stopping): finish the step, save, stop
    elif phase == "loading":
        os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt: a "stopped before training began" status


def _detach_output(log: Path) -> None:
    """Point stdout and stderr at the run's log: the pipe to the dead supervisor would fail every print."""
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
