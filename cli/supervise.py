"""`ftc run`: compile if needed, lay out the run directory, execute train.py as a child process,
and show its progress from events.jsonl (the Textual monitor is a later issue)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ftc.cli.console import SafeConsole
from ftc.cli.lrfind import run_range_test
from ftc.compiler.compile import CompileResult, compile_spec
from ftc.compiler.overrides import Override
from ftc.core.errors import RunError
from ftc.core import checkpoint as ckpt
from ftc.runtime import faults
from ftc.runtime.evaluate import table_rows
from ftc.core.events import EventLog, EventTail, read_events
from ftc.core.paths import check_output_dir
from ftc.cli import rundir
from ftc.cli import launch
from ftc.cli.recover import rank_logs, ranks_outcome, recover, resume_hint, with_overrides, write_plan
from ftc.cli.report import report_quietly


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


def run_spec(spec: str, *, run_dir: str | None = None, build_dir: str | None = None, tui: bool = True,
             fresh: bool = False, resume_anyway: bool = False, force: bool = False,
             overrides: tuple[Override, ...] = (), node: launch.Node = launch.Node()) -> int:
    """Compile `spec`, then run its script in a run directory (a new one, or `run_dir`, which is resumed
    from its last checkpoint when it holds a run); returns the exit code: 0 completed, 77 (ckpt.EXIT_STOPPED)
    stopped and resumable, 130 stopped by Ctrl-C, 1 failed."""
    console = SafeConsole(stderr=False)
    try:
        faults.parse(os.environ.get(faults.ENV, ""))
    except ValueError as exc:
        raise RunError(str(exc)) from None
    result = compile_spec(spec, build_dir, overrides, range_test=run_range_test)
    launch.check_node(result.plan.to_json()["settings"], node)
    changed = result.write()
    console.print(f"compiled {result.source.display} -> {result.out_dir}/ "
                  f"({', '.join(changed) if changed else 'up to date'})")
    target = Path(run_dir) if run_dir else check_output_dir(new_run_dir(result.plan.name), "run folder")
    rundir.check_folder(target, force=force)  # a folder of the user's files is refused (--force: beside them)
    lock = rundir.lock(target, console)  # waits for a training process whose ftc run died to save and stop
    try:
        return _run_locked(console, result, target, lock, tui=tui, fresh=fresh, resume_anyway=resume_anyway,
                           node=node)
    finally:
        lock.release()


def _run_locked(console: Console, result: CompileResult, target: Path, lock: ckpt.RunLock, *, tui: bool,
                fresh: bool, resume_anyway: bool, node: launch.Node = launch.Node()) -> int:
    events_path = target / "events.jsonl"
    resume: ckpt.Checkpoint | None = None
    if events_path.exists() and fresh:
        kept = _archive(target)
        console.print(f"--fresh: the previous run in {target} moved to {kept}")
    elif events_path.exists():
        resume = _resume_point(console, result, target, resume_anyway)
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.source.path, target / "spec.toml")
    for name in (n for n in result.emitted.files if n != "plan.json"):  # the script, plan.md, launch files
        shutil.copyfile(result.out_dir / name, target / name)
    write_plan(result, target)  # a resumed run keeps what earlier faults changed

    events = EventLog(events_path)
    if resume is not None:
        message = f"resuming from {resume.path.name} (step {resume.step} of {resume.manifest.get('max_steps', '?')})"
        console.print(f"{target} holds a run: {message}")
        events.write("status", message, state="starting", step=resume.step, resume=str(resume.path))
    else:
        events.write("status", f"launching {target / 'train.py'}", state="starting", spec=result.source.display)
    console.print(f"run directory: {target}")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",  # quiet, line-by-line output:
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")  # progress comes from events
    env[ckpt.SUPERVISOR_ENV] = str(os.getpid())  # the script saves and stops if we die (ftc.runtime.orphan)
    fired: list[tuple[str, int]] = []
    started = time.monotonic()
    while True:
        before, before_ranks = len(read_events(events_path)), rank_logs(target)
        code, tail, signalled = _attempt(console, target, lock, env, resume, tui=tui, node=node)
        new = read_events(events_path)[before:]
        final = next((e for e in reversed(new) if e.get("type") == "status"), {})
        settings = json.loads((target / "plan.json").read_text(encoding="utf-8"))["settings"]
        final, code, others = ranks_outcome(target, before_ranks, final, code,  # one rank's OOM or NaN
                                            distributed=launch.is_distributed(settings))
        fired += [(e["kind"], e["step"]) for e in new + others if e.get("type") == "fault"]
        if env.get(faults.ENV):  # each injected fault fires once per run, not once per attempt
            env[faults.ENV] = faults.without(os.environ[faults.ENV], fired)
        if code == 0 and node.rank > 0:  # rank 0, on node 0, writes the events and the result
            console.print(f"node {node.rank} finished its part; the result and events are on node 0")
            return 0
        if code == 0 and final.get("state") == "completed":
            _summary(console, read_events(events_path), target, time.monotonic() - started)
            report_quietly(console, target)
            return 0
        if final.get("error") == "eval_gate":  # trained and saved, but worse than the base: the report shows it
            report_quietly(console, target)
        if final.get("state") == "stopped":
            return _stopped(console, result, target, final, signalled)
        if signalled and final.get("state") != "failed":  # Ctrl-C before training began, or a second one
            message = f"stopped by a signal before a checkpoint could be saved (exit code {code})"
            final = events.write("status", message, state="stopped", reason="interrupted")
            return _stopped(console, result, target, final, signalled)
        resume = recover(console, result, target, events, final, code, tail)


def _attempt(console: Console, target: Path, lock: ckpt.RunLock, env: dict[str, str],
             resume: ckpt.Checkpoint | None, *, tui: bool, node: launch.Node = launch.Node()
             ) -> tuple[int, deque[str], list[int]]:
    """Run the script once; Ctrl-C and SIGTERM are passed on to it as SIGTERM (the first: finish the step, save and
    stop, or end at once while the model loads; the second: stop at once). Returns (exit code, last output lines,
    signals received, in order)."""
    settings = json.loads((target / "plan.json").read_text(encoding="utf-8"))["settings"]
    argv = launch.script_argv(target, settings, node)  # python, or torchrun with a process per device
    if resume is not None:
        argv += ["--resume", str(resume.path)]
    tail: deque[str] = deque(maxlen=25)
    received: list[int] = []
    with (target / "train.log").open("a", encoding="utf-8") as log:
        # Its own process group: a terminal's Ctrl-C reaches the script once, through us. It inherits the
        # run directory's lock, so an orphaned script still keeps a second `ftc run` out.
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                 env=env, start_new_session=True, pass_fds=(lock.fileno(),))
        lock.note_child(child.pid)

        def forward(signum: int, frame: FrameType | None) -> None:
            received.append(signum)
            if len(received) == 1:
                console.print(f"{signal.Signals(signum).name}: the script finishes its step, saves a checkpoint and "
                              "stops (again: stop at once)")
            launch.terminate(child.pid, settings)  # always SIGTERM: a child may inherit an ignored SIGINT
                                                   # (`ftc run &`); the script treats both alike

        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            assert child.stdout is not None
            pump = threading.Thread(target=_pump, args=(child.stdout, log, tail, console), daemon=True)
            pump.start()
            _follow(child, target / "events.jsonl", console, live=console.is_terminal, tui=tui)
            child.wait()
            pump.join(timeout=5)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return child.returncode, tail, received


def _archive(target: Path) -> Path:
    """Move a previous run's files into TARGET/previous/<time>/ (nothing is deleted; files that are not ftc's,
    beside a run put there with --force, stay where they are)."""
    kept = target / "previous" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kept.mkdir(parents=True)
    for entry in list(target.iterdir()):
        if ckpt.is_entry(entry.name) and entry.name not in ("previous", ckpt.LOCK, "control"):  # not a user's file
            entry.rename(kept / entry.name)
    return kept


def _resume_point(console: Console, result: CompileResult, target: Path, resume_anyway: bool) -> ckpt.Checkpoint:
    """The checkpoint to continue `target` from, refusing (with the reasons and the options) when the run
    finished, has no checkpoint, or the spec or data changed in a way that makes resuming wrong."""
    ckpt.clean_partial(target)
    final = next((e for e in reversed(read_events(target / "events.jsonl")) if e.get("type") == "status"), {})
    if final.get("state") == "completed" and (target / "final").exists():
        raise RunError(f"{target} holds a completed run (result in {target / 'final'}); choose another --run-dir, "
                       f"or pass --fresh to train again (the old run moves to {target}/previous/)")
    last = ckpt.latest(target)
    if last is None:
        raise RunError(f"{target} holds a run with no complete checkpoint to resume from; pass --fresh to start "
                       f"over (the old files move to {target}/previous/), or choose another --run-dir")
    problems = _incompatible(result, target, last)
    if problems and not resume_anyway:
        raise RunError(f"cannot resume {target} from {last.path.name}: " + "; ".join(problems)
                       + ". Resuming would continue a different training than the one checkpointed; pass --fresh "
                       "to start over (the old run moves to previous/), or --resume-anyway to continue regardless")
    if problems:
        console.print("--resume-anyway: resuming although " + "; ".join(problems))
        EventLog(target / "events.jsonl").write("warning", "resumed although " + "; ".join(problems))
    moved = _versions_moved(last.manifest.get("versions", {}))
    if moved:  # still a valid resume, but not bit-for-bit the run an uninterrupted one would have been
        message = (f"{last.path.name} was written with {', '.join(moved)}; the resumed steps may differ slightly "
                   "from an uninterrupted run")
        console.print(f"note: {message}")
        EventLog(target / "events.jsonl").write("warning", message)
    return last


def _versions_moved(recorded: dict[str, str]) -> list[str]:
    """'torch 2.12.0 (now 2.13.0)' for each library whose version changed since a checkpoint."""
    from importlib.metadata import PackageNotFoundError, version

    moved = []
    for name, then in sorted(recorded.items()):
        if name == "python":
            continue
        try:
            now = version(name)
        except PackageNotFoundError:
            continue
        if now != then:
            moved.append(f"{name} {then} (now {now})")
    return moved


def _incompatible(result: CompileResult, target: Path, last: ckpt.Checkpoint) -> list[str]:
    """What changed since `last` that makes resuming wrong: plan settings that alter the training, and the data."""
    problems = []
    try:
        old = json.loads((target / "plan.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):  # damaged: nothing to compare with
        old = None
    old = old if isinstance(old, dict) else None
    new = with_overrides(json.loads(json.dumps(result.plan.to_json()["settings"], default=str)),
                          ckpt.read_overrides(target))  # compared as the resumed run would train
    resumable = result.plan.resumable()  # the settings whose metadata says a resumed run may change them
    if old is not None:
        for key in sorted(set(old) | set(new)):
            if key not in resumable and old.get(key) != new.get(key):
                problems.append(f"{key} changed from {old.get(key)!r} to {new.get(key)!r}")
    if old is not None:
        problems += launch.world_change(old, new)
    recorded = last.manifest.get("data_sha256")
    plan = result.plan  # the fingerprint as the script computes it from CONFIG (DATA_FILES or DATA_SOURCE, VALIDATION)
    files = plan["data_files"] if plan["data_kind"] == "files" else None
    source = plan["data_source"] if plan["data_kind"] in ("saved", "hub") else None
    now = ckpt.data_fingerprint(files, source, plan["validation"])
    if recorded and recorded != now:
        problems.append(f"the data changed since {last.path.name} (sha256 {recorded[:12]} -> {now[:12]})")
    return problems


def _stopped(console: Console, result: CompileResult, target: Path, final: dict[str, Any],
             signalled: list[int]) -> int:
    """A run that stopped on request or for a full disk: say why and how to resume; the exit code is 130 after
    Ctrl-C, else 77 (ckpt.EXIT_STOPPED: stopped, resumable), never 0, which says the training completed."""
    hint = resume_hint(result, target) or "no checkpoint was saved: a rerun starts over (--fresh)"
    if final.get("error") == "disk_full":
        raise RunError(f"{final.get('message')}\n{hint}")
    console.print(f"stopped: {final.get('message')}\n{hint}")
    return 130 if signal.SIGINT in signalled else ckpt.EXIT_STOPPED


def _follow(child: subprocess.Popen[str], events_path: Path, console: Console, *, live: bool,
            tui: bool = False) -> None:
    """Keep a progress bar (terminals only) in step with the events file until the child exits (`_pump` echoes its
    output). In a terminal, unless --no-tui, the Textual monitor comes first; closing it leaves the child running
    (the progress bar then takes over), and `ftc monitor RUN_DIR` attaches again."""
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
                                    loss=f"loss {event['loss']:.4f}" if event.get("loss") is not None else "")
            if exited:
                return
            time.sleep(0.5)


def _summary(console: Console, events: list[dict[str, Any]], target: Path, seconds: float) -> None:
    steps = [e for e in events if e.get("type") == "step" and e.get("loss") is not None]
    evals = [e for e in events if e.get("type") == "eval" and e.get("loss") is not None]
    final = next(e for e in reversed(events) if e.get("type") == "status")
    table = Table(title="run finished", show_header=False)
    table.add_row("steps", str(final.get("step")))
    if steps:
        table.add_row("training loss", f"{steps[0]['loss']:.4f} -> {steps[-1]['loss']:.4f}")
    if evals:
        table.add_row("validation loss", f"{evals[0]['loss']:.4f} -> {evals[-1]['loss']:.4f}")
    if compare := next((e for e in events if e.get("type") == "compare"), None):
        n = compare.get("examples")
        table.add_row("held-out exact match", f"{compare.get('exact_before')}/{n} -> {compare.get('exact_after')}/{n}")
    if metrics := next((e for e in reversed(events) if e.get("type") == "metrics"), None):
        for name, before, after, _ in table_rows(metrics.get("before"), metrics.get("after")):
            table.add_row(name, f"{before} -> {after}")
    table.add_row("time", f"{seconds:.0f} s")
    table.add_row("result", str(final.get("output")))
    table.add_row("events", str(target / "events.jsonl"))
    console.print(table)
