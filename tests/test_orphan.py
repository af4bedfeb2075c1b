"""ftc.runtime.orphan on real processes: a script whose supervisor dies gets SIGTERM (its stop handler saves and
stops), with its output moved to train.log and a warning event; as the supervisor's own child (parent-death signal,
broken output pipe) and as the child of a launcher (the supervisor is not its parent: the pid watch)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ftc.core import checkpoint as ckpt

SCRIPT = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from ftc.core.events import EventLog
    from ftc.runtime import orphan
    run_dir = Path(sys.argv[1])
    def on_term(signum, frame):  # as ftc.runtime.stopping would: save, then exit 77
        print("stop handler: saving", flush=True)
        (run_dir / "saved").write_text("yes")
        sys.exit(77)
    signal.signal(signal.SIGTERM, on_term)
    orphan.watch(EventLog(run_dir / "events.jsonl"), run_dir, began=lambda: True)
    print("training", flush=True)
    while True:
        time.sleep(0.05)
        print("step", flush=True)  # fails on a broken pipe unless the output moved to train.log
""")

LAUNCHER = textwrap.dedent("""
    import os, subprocess, sys, time
    env = dict(os.environ, **{{{env!r}: str(os.getpid())}})
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, start_new_session=True)
    print(child.pid, flush=True)
    child.stdout.readline()  # "training": the watch is on
    print("ready", flush=True)
    time.sleep(120)
""").format(env=ckpt.SUPERVISOR_ENV)


def _wait_gone(pid: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while ckpt.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ckpt.pid_alive(pid), f"process {pid} still runs {seconds} s after its supervisor died"


def _warning(run_dir: Path) -> dict:  # type: ignore[type-arg]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    (gone,) = [e for e in events if e.get("kind") == "supervisor_gone"]
    return gone


def test_the_supervisors_child_stops_when_it_is_killed(tmp_path: Path) -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", LAUNCHER, SCRIPT, str(tmp_path)], stdout=subprocess.PIPE,
                                  text=True)
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    assert supervisor.stdout.readline().strip() == "ready"
    supervisor.kill()  # kill -9: the child's output pipe breaks, and it is not reaped by anyone yet
    supervisor.wait()
    _wait_gone(child)
    assert (tmp_path / "saved").read_text() == "yes"
    assert _warning(tmp_path)["supervisor"] == supervisor.pid
    log = (tmp_path / "train.log").read_text()
    assert "is gone: saving a checkpoint after the current step and stopping" in log and "stop handler" in log


def test_a_launched_script_stops_when_the_supervisor_is_not_its_parent(tmp_path: Path) -> None:
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    env = dict(os.environ, **{ckpt.SUPERVISOR_ENV: str(supervisor.pid)})
    script = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              text=True)
    assert script.stdout is not None and script.stdout.readline().strip() == "training"
    time.sleep(1.5)
    assert script.poll() is None  # a live supervisor: it trains on
    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait()
    assert script.wait(timeout=30) == 77
    assert (tmp_path / "saved").exists() and _warning(tmp_path)["supervisor"] == supervisor.pid


def test_without_a_supervisor_nothing_is_watched(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ftc.core.events import EventLog
    from ftc.runtime import orphan

    monkeypatch.delenv(ckpt.SUPERVISOR_ENV, raising=False)
    assert orphan.watch(EventLog(tmp_path / "e.jsonl"), tmp_path, began=lambda: True) is None
    monkeypatch.setenv(ckpt.SUPERVISOR_ENV, str(os.getpid()))  # itself: not a supervisor
    assert orphan.supervisor_pid() is None
