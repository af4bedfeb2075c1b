"""Runs that survive faults, end to end on the tiny model through the real `ftc run`: kill -9 then resume
to the same final weights as an uninterrupted run, SIGTERM, a full disk, out of memory and NaN steps
(faults injected with FTC_INJECT), and refusals to resume a changed spec or a locked run directory."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import run_ftc, write_jsonl

from ftc.core import checkpoint as ckpt

WORDS = "red green blue yellow black white cat dog".split()
ROWS = [{"q": f"translate {w} {i}", "a": w.upper()} for i in range(4) for w in WORDS]  # 32 rows: 24 train, 8 val
STEPS = 12  # two epochs of 6 steps of 4 rows


def _spec(lr: float = 5e-2, extra: str = "") -> str:
    return ('name = "res"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\n'
            'validation = 0.25\nmax_length = 48\n[data.columns]\nprompt = "q"\ncompletion = "a"\n'
            '[method]\nkind = "lora"\nr = 8\nalpha = 16\ndropout = 0.1\n'  # dropout: the RNG state must resume too
            f'[train]\nmax_steps = {STEPS}\nbatch_size = 4\nlearning_rate = {lr}\nlogging_steps = 1\nwarmup = 0.1\n'
            f'save_steps = 3\n{extra}[hardware]\ndevice = "cpu"\n')


def _setup(root: Path, tiny_model: Path, spec: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(tiny_model, root / "tiny")
    write_jsonl(root / "d.jsonl", ROWS)
    (root / "s.toml").write_text(spec or _spec())
    return root


def _run(root: Path, *args: str, inject: str = "") -> subprocess.CompletedProcess[str]:
    os.environ.pop("FTC_INJECT", None)
    if inject:
        os.environ["FTC_INJECT"] = inject
    try:
        return run_ftc("run", "s.toml", "--run-dir", "r", "--no-tui", *args, cwd=root)
    finally:
        os.environ.pop("FTC_INJECT", None)


def _events(root: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (root / "r" / "events.jsonl").read_text().splitlines()]


def _weights(root: Path) -> dict:  # type: ignore[type-arg]
    from safetensors.torch import load_file

    return load_file(str(root / "r" / "final" / "adapter_model.safetensors"))


def _same_weights(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    import torch

    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6, rtol=1e-5) for k in a), f"max abs difference {worst}"


def _assert_clean(root: Path) -> None:
    """Every folder in checkpoints/ is a complete checkpoint (a crash may leave checkpoints.partial/ behind:
    the next start removes it)."""
    run = root / "r"
    folders = [p for p in (run / ckpt.FOLDER).iterdir()] if (run / ckpt.FOLDER).exists() else []
    assert all((p / ckpt.MANIFEST).is_file() for p in folders), folders
    assert not any(p.name.startswith(".trash") for p in folders)


@pytest.fixture(scope="module")
def reference(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """The final adapter of an uninterrupted run."""
    root = _setup(tmp_path_factory.mktemp("reference"), tiny_model)
    done = _run(root)
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(root)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [3, 6, 9, 12]
    assert sorted(p.name for p in (root / "r" / "checkpoints").iterdir()) == ["checkpoint-12", "checkpoint-9"]
    manifest = json.loads((root / "r/checkpoints/checkpoint-12" / ckpt.MANIFEST).read_text())
    assert manifest["step"] == 12 and manifest["seed"] == 42 and manifest["config"]["LEARNING_RATE"] == 5e-2
    assert {"torch", "transformers", "peft", "ftc"} <= set(manifest["versions"])
    assert len(manifest["data_sha256"]) == 64
    return _weights(root)


def test_crash_then_resume_gives_the_same_weights(reference: dict, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    root = _setup(tmp_path, tiny_model)
    crashed = _run(root, inject="crash@8")  # SIGKILL at the start of step 8: steps 7 are lost, checkpoint 6 kept
    assert crashed.returncode == 1
    assert "the checkpoint at step 6 is intact; resume with: ftc run s.toml --run-dir r" in crashed.stderr
    _assert_clean(root)
    resumed = _run(root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "r holds a run: resuming from checkpoint-6 (step 6 of 12)" in resumed.stdout
    events = _events(root)
    assert any(e["type"] == "resume" and e["step"] == 6 for e in events)
    _same_weights(_weights(root), reference)
    _assert_clean(root)


@pytest.mark.slow
def test_sigterm_stops_resumably_and_a_changed_spec_is_refused(reference: dict, tiny_model: Path,  # type: ignore[type-arg]
                                                               tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model)
    stopped = _run(root, inject="sigterm@5")  # a scheduler's SIGTERM to the script: stopped, resumable (77, not 0)
    assert stopped.returncode == ckpt.EXIT_STOPPED, stopped.stdout + stopped.stderr
    events = _events(root)
    assert [e["state"] for e in events if e["type"] == "status"] == ["starting", "running", "stopping", "stopped"]
    assert events[-1]["checkpoint"].endswith("checkpoint-5")
    assert (events[-1]["error"], events[-1]["exit_code"]) == ("stopped", ckpt.EXIT_STOPPED)
    assert "resume with: ftc run s.toml --run-dir r" in stopped.stdout
    assert not (root / "r" / "final").exists()

    (root / "s.toml").write_text(_spec(lr=1e-2))  # another learning rate: the checkpoint belongs to another training
    refused = _run(root)
    assert refused.returncode == 1
    assert "cannot resume r from checkpoint-5: learning_rate changed from 0.05 to 0.01" in refused.stderr
    assert "--fresh" in refused.stderr and "--resume-anyway" in refused.stderr

    (root / "s.toml").write_text(_spec())
    write_jsonl(root / "d.jsonl", ROWS[::-1])  # the same rows in another order: another training
    refused = _run(root)
    assert refused.returncode == 1 and "the data changed since checkpoint-5 (sha256 " in refused.stderr
    write_jsonl(root / "d.jsonl", ROWS)

    (root / "s.toml").write_text(_spec(extra="keep_checkpoints = 3\n"))  # a safe change: resumes
    resumed = _run(root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _same_weights(_weights(root), reference)


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint(reference: dict, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    root = _setup(tmp_path, tiny_model)
    full = _run(root, inject="diskfull@6")  # the free-space check before checkpoint 6 fails
    assert full.returncode == 1
    assert "disk full" in full.stderr and "the last checkpoint (step 3) is intact" in full.stderr
    assert [c.step for c in ckpt.complete(root / "r")] == [3]
    final = _events(root)[-1]
    assert (final["state"], final["error"], final["exit_code"]) == ("stopped", "disk_full", ckpt.EXIT_STOPPED)
    failed_write = _run(root, inject="enospc@9")  # writing checkpoint 9 fails half-way
    assert failed_write.returncode == 1
    assert "disk full while writing checkpoint 9" in failed_write.stderr
    assert [c.step for c in ckpt.complete(root / "r")] == [3, 6]
    _assert_clean(root)
    finished = _run(root)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    _same_weights(_weights(root), reference)


@pytest.mark.slow
def test_out_of_memory_halves_the_micro_batch(tiny_model: Path, tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model, _spec(extra="micro_batch_size = 4\n"))
    done = _run(root, inject="oom@5")
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(root)
    oom = next(e for e in events if e["type"] == "status" and e.get("error") == "oom")
    assert (oom["exit_code"], oom["failed_step"], oom["micro_batch_size"]) == (ckpt.EXIT_OOM, 5, 4)
    retry = next(e for e in events if e["type"] == "retry")
    assert retry["reason"] == "oom" and (retry["micro_batch_size"], retry["grad_accum"]) == (2, 2)
    assert retry["resume"].endswith("checkpoint-3")
    starts = [e["config"] for e in events if e["type"] == "start"]
    assert [(c["MICRO_BATCH_SIZE"], c["GRAD_ACCUM"]) for c in starts] == [(4, 1), (2, 2)]
    last_steps = {e["step"] for e in events if e["type"] == "step"}
    assert last_steps == set(range(1, STEPS + 1)) and events[-1]["state"] == "completed"
    plan = json.loads((root / "r" / "plan.json").read_text())
    assert (plan["settings"]["micro_batch_size"], plan["settings"]["grad_accum"]) == (2, 2)
    assert plan["runtime_changes"][0]["reason"] == "oom"
    manifest = json.loads((root / "r/checkpoints/checkpoint-12" / ckpt.MANIFEST).read_text())
    assert manifest["micro_batch_size"] * manifest["grad_accum"] == 4  # the same effective batch

    again = _run(root)
    assert again.returncode == 1 and "r holds a completed run" in again.stderr
    fresh = _run(root, "--fresh")  # starts over with the plan's micro-batch; the old run is kept aside
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    (previous,) = (root / "r" / "previous").iterdir()
    assert (previous / "overrides.json").exists() and (previous / "final").is_dir()
    assert [e["config"]["MICRO_BATCH_SIZE"] for e in _events(root) if e["type"] == "start"] == [4]


def test_out_of_memory_at_micro_batch_one_stops_with_advice(tiny_model: Path, tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model, _spec(extra="micro_batch_size = 1\n").replace("batch_size = 4", "batch_size = 1"))
    done = _run(root, inject="oom@2")
    assert done.returncode == 1
    assert "out of memory at step 2 with a micro-batch of 1: it cannot go lower" in done.stderr
    assert "gradient_checkpointing" in done.stderr and "Traceback" not in done.stderr
    again = _run(root)  # no checkpoint was saved: nothing to resume
    assert again.returncode == 1 and "r holds a run with no complete checkpoint to resume from; pass --fresh" in again.stderr


def test_nan_with_policy_stop_names_the_rows(tiny_model: Path, tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model, _spec(extra='on_nan = "stop"\n'))
    done = _run(root, inject="nan@4")
    assert done.returncode == 1
    assert "step 4: NaN/inf gradients (on_nan = 'stop'); stopping." in done.stderr
    assert "The step trained on rows " in done.stderr
    assert "None of them gives a non-finite loss alone" in done.stderr  # the injected NaN is not in the data
    final = _events(root)[-1]
    assert (final["state"], final["error"], final["exit_code"]) == ("failed", "nan", 1)
    _assert_clean(root)


@pytest.mark.slow
def test_nan_rollback_lowers_the_learning_rate(tiny_model: Path, tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model, _spec(extra="nan_patience = 2\n"))
    done = _run(root, inject="nan@5,nan@7,nan@8")  # 5 is skipped; 7 and 8 in a row roll back to checkpoint 6
    assert done.returncode == 0, done.stdout + done.stderr
    events = _events(root)
    assert [e["step"] for e in events if e["type"] == "nan" and not e.get("rollback")] == [5, 7]
    rolled = next(e for e in events if e["type"] == "status" and e.get("error") == "nan")
    assert (rolled["state"], rolled["exit_code"], rolled["last_good_step"]) == ("exiting", ckpt.EXIT_ROLLBACK, 6)
    retry = next(e for e in events if e["type"] == "retry")
    assert retry["reason"] == "nan" and retry["lr_scale"] == 0.5 and retry["resume"].endswith("checkpoint-6")
    starts = [e["config"]["LEARNING_RATE"] for e in events if e["type"] == "start"]
    assert starts == [5e-2, 2.5e-2]  # the lower rate is what the restarted script's CONFIG shows
    resumed_lr = [e["learning_rate"] for e in events if e["type"] == "step" and e["step"] == 7]
    assert len(resumed_lr) == 2 and abs(resumed_lr[1] - resumed_lr[0] * 0.5) < 1e-9  # the same step at half the lr
    assert events[-1]["state"] == "completed"
    plan = json.loads((root / "r" / "plan.json").read_text())
    assert plan["settings"]["learning_rate"] == 2.5e-2 and plan["runtime_changes"][0]["reason"] == "nan"
    manifest = json.loads((root / "r/checkpoints/checkpoint-12" / ckpt.MANIFEST).read_text())
    assert manifest["config"]["LEARNING_RATE"] == 2.5e-2


@pytest.mark.slow
def test_kill_9_at_random_steps_then_resume(reference: dict, tiny_model: Path, tmp_path: Path) -> None:  # type: ignore[type-arg]
    """SIGKILL while checkpoint 6 is written (before it is published), then SIGKILL the supervisor and the
    training process group at a random step, twice, then resume."""
    root = _setup(tmp_path, tiny_model)
    torn = _run(root, inject="savecrash@6")
    assert torn.returncode == 1 and [c.step for c in ckpt.complete(root / "r")] == [3]
    assert (root / "r" / ckpt.STAGING / "checkpoint-6").is_dir()  # written, never published
    rng = random.Random()
    for _ in range(2):
        kill_at = rng.randint(2, STEPS - 1)
        before = len(_events(root))
        process = _start(root)
        _wait_for_step(root, process, kill_at, after=before)
        if process.poll() is None:
            child = json.loads((root / "r" / ckpt.LOCK).read_text())["child"]
            os.killpg(process.pid, signal.SIGKILL)
            os.killpg(child, signal.SIGKILL)
            process.wait()
            time.sleep(0.5)
        _assert_clean(root)
    done = _run(root)
    assert done.returncode == 0, done.stdout + done.stderr
    _same_weights(_weights(root), reference)


def _start(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "ftc.cli.main", "run", "s.toml", "--run-dir", "r", "--no-tui"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _wait_for_step(root: Path, process: subprocess.Popen[bytes], step: int, after: int = 0) -> None:
    """Until this attempt (events after the first `after`) logs `step`, or the process ends."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (root / "r/events.jsonl").exists() and any(e["type"] == "step" and e["step"] >= step
                                                      for e in _events(root)[after:]):
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_on_ftc_run_stops_after_the_step(tiny_model: Path, tmp_path: Path) -> None:
    """SIGINT to `ftc run` itself (as a terminal's Ctrl-C) reaches the script once, through the supervisor."""
    root = _setup(tmp_path, tiny_model)
    process = _start(root)
    _wait_for_step(root, process, 4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, out.decode() + err.decode()
    final = _events(root)[-1]
    assert final["state"] == "stopped" and final["reason"] == "SIGTERM received"  # passed on as SIGTERM
    assert ckpt.latest(root / "r").step == final["step"] >= 4  # type: ignore[union-attr]
    assert b"resume with: ftc run s.toml --run-dir r" in out


def test_a_locked_run_directory_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    root = _setup(tmp_path, tiny_model)
    lock = ckpt.RunLock(root / "r")
    lock.acquire()
    try:
        done = _run(root)
    finally:
        lock.release()
    assert done.returncode == 1
    assert "r is being written by another ftc run (held by {\"pid\": " in done.stderr


def _lock_holder(root: Path) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        holder = ckpt.RunLock(root / "r").holder()
        if "child" in holder:
            return holder
        time.sleep(0.05)
    raise AssertionError("no training process in the lock file")


@pytest.mark.slow
def test_supervisor_killed_the_script_saves_and_stops_then_resumes(reference: dict, tiny_model: Path,  # type: ignore[type-arg]
                                                                   tmp_path: Path) -> None:
    """kill -9 of `ftc run`'s whole process group (the script, in a session of its own, survives it): the script
    saves a checkpoint and stops by itself, and an `ftc run` started at once waits for it, then resumes."""
    root = _setup(tmp_path, tiny_model)
    process = _start(root)
    _wait_for_step(root, process, 4)
    holder = _lock_holder(root)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert ckpt.pid_alive(holder["child"])  # orphaned, still holding the lock
    resumed = _run(root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"its training process (pid {holder['child']}) is saving a checkpoint and stopping; waiting" in resumed.stdout
    events = _events(root)
    gone = next(e for e in events if e["type"] == "warning" and e.get("kind") == "supervisor_gone")
    assert gone["supervisor"] == holder["pid"]
    stop = next(e for e in events if e["type"] == "status" and e["state"] == "stopped")
    assert stop["exit_code"] == ckpt.EXIT_STOPPED and stop["checkpoint"].endswith(f"checkpoint-{stop['step']}")
    assert f"resuming from checkpoint-{stop['step']} " in resumed.stdout
    assert "is gone: saving a checkpoint" in (root / "r" / "train.log").read_text()  # its output went to the log
    _same_weights(_weights(root), reference)


@pytest.mark.slow
def test_supervisor_and_script_killed_together_then_resumed_at_once(reference: dict, tiny_model: Path,  # type: ignore[type-arg]
                                                                    tmp_path: Path) -> None:
    """SIGKILL to both (a scheduler killing every process of the job): the lock dies with them, and an `ftc run`
    started at once resumes from the last periodic checkpoint."""
    root = _setup(tmp_path, tiny_model)
    process = _start(root)
    _wait_for_step(root, process, 7)
    holder = _lock_holder(root)
    os.killpg(process.pid, signal.SIGKILL)
    os.killpg(holder["child"], signal.SIGKILL)
    process.wait()
    resumed = _run(root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "waiting" not in resumed.stdout and "r holds a run: resuming from checkpoint-6 " in resumed.stdout
    _same_weights(_weights(root), reference)


def test_a_live_supervisor_keeps_the_lock_and_a_dead_one_is_waited_for(tmp_path: Path) -> None:
    from rich.console import Console

    from ftc.cli import rundir
    from ftc.core.errors import RunError

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = ckpt.RunLock(tmp_path / "r")
        lock.acquire()
        lock.note_child(sleeper.pid)  # the holder: this (live) process and a child
        with pytest.raises(RunError, match="is being written by another ftc run"):
            rundir.lock(tmp_path / "r", Console())
        (tmp_path / "r" / ckpt.LOCK).write_text(json.dumps({"pid": 2**22 + 7, "child": sleeper.pid}))  # a dead one
        os.environ[rundir.WAIT_ENV] = "1"
        with pytest.raises(RunError, match=rf"still held by the training process \(pid {sleeper.pid}\) 1 s after"):
            rundir.lock(tmp_path / "r", Console())
        lock.release()
        rundir.lock(tmp_path / "r", Console()).release()
    finally:
        os.environ.pop(rundir.WAIT_ENV, None)
        sleeper.kill()
        sleeper.wait()
    assert not ckpt.pid_alive(sleeper.pid) and ckpt.pid_alive(os.getpid())
