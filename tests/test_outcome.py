"""How a training script ends (ftc.runtime.outcome): each kind of error becomes one status event with its
kind and exit code; and `ftc run` decides from that event, never from the words in the script's output."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import write_jsonl

from ftc.core import checkpoint as ckpt
from ftc.core.events import EventLog, read_events


def _errors() -> list[tuple[BaseException, str, str, int]]:
    """(error, kind, state, exit code) for every kind, raised inside trainer.train()."""
    import torch

    from ftc.core.bundled import BundledModelError
    from ftc.core.data.encode import DataError
    from ftc.runtime.methods import MethodError
    from ftc.runtime.outcome import GuardError, Interrupted, NonFiniteSteps, StopRun

    return [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "oom", "exiting", 75),
        (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"), "oom", "exiting", 75),
        (NonFiniteSteps("step 5: NaN/inf gradients", rollback=True, last_good_step=3), "nan", "exiting", 76),
        (NonFiniteSteps("step 5: NaN/inf gradients", rollback=False, last_good_step=3), "nan", "failed", 1),
        (StopRun("SIGTERM received"), "stopped", "stopped", 77),
        (StopRun("disk full: 0.00 GiB free", kind="disk_full"), "disk_full", "stopped", 77),
        (OSError(errno.ENOSPC, "No space left on device"), "disk_full", "stopped", 77),
        (Interrupted("SIGINT", at_once=True), "interrupted", "stopped", 130),
        (DataError("d.jsonl: rows 3, 4 have no answer"), "data", "failed", 1),
        (BundledModelError("the bundled model needs gguf: pip install gguf"), "bundled_model", "failed", 1),
        (MethodError("cannot find the decoder blocks"), "method", "failed", 1),
        (GuardError("r already has checkpoints"), "run_dir", "failed", 1),
        (KeyError("input_ids"), "crash", "failed", 1),
    ]


@pytest.mark.parametrize("index", range(13))
def test_each_error_kind_becomes_a_status_event_and_an_exit_code(index: int, tmp_path: Path) -> None:
    from ftc.runtime.outcome import RunOutcome

    error, kind, state, code = _errors()[index]
    trainer = SimpleNamespace(state=SimpleNamespace(global_step=4), args=SimpleNamespace(per_device_train_batch_size=8))
    (tmp_path / ckpt.STAGING / "checkpoint-5").mkdir(parents=True)  # half-written when the error came
    with pytest.raises(SystemExit) as exited:
        with RunOutcome(EventLog(tmp_path / "events.jsonl"), tmp_path).training(trainer):
            raise error
    assert exited.value.code == code
    events = read_events(tmp_path / "events.jsonl")
    final = events[-1]
    assert (final["type"], final["state"], final["error"], final["exit_code"], final["step"]) == \
        ("status", state, kind, code, 4)
    assert final["message"]
    assert not (tmp_path / ckpt.STAGING).exists()
    if kind == "oom":  # the monitor counts the oom event; ftc run reads the failed step and micro-batch
        assert (final["failed_step"], final["micro_batch_size"]) == (5, 8)
        assert [e["type"] for e in events] == ["oom", "status"]
    if kind == "nan":
        assert final["last_good_step"] == 3 and (len(events) == 2) == (code == 76)  # a rollback's nan event
    if state == "stopped":
        assert "checkpoint" in final and final["reason"]


def test_an_error_outside_training_exits_1_with_its_event(tmp_path: Path) -> None:
    """Before trainer.train() (loading data or the model) nothing can be retried: out of memory there fails."""
    import torch

    from ftc.runtime.outcome import RunOutcome

    outcome = RunOutcome(EventLog(tmp_path / "events.jsonl"), tmp_path)
    assert outcome.report(torch.OutOfMemoryError("CUDA out of memory"), training=False) == 1
    final = read_events(tmp_path / "events.jsonl")[-1]
    assert (final["state"], final["error"], final["exit_code"]) == ("failed", "oom", 1)


SCRIPT = """\
import sys
from ftc.core.data.encode import DataError
from ftc.core.events import EventLog
from ftc.runtime.outcome import RunOutcome

RunOutcome(EventLog(sys.argv[1] + "/events.jsonl"), sys.argv[1]).watch()
if sys.argv[2] == "data":
    raise DataError("d.jsonl: 2 example(s) with no trained token (rows 7, 9); raise data.max_length")
raise ZeroDivisionError("division by zero")
"""


@pytest.mark.parametrize("kind", ["data", "crash"])
def test_watch_reports_an_error_anywhere_in_the_script(kind: str, tmp_path: Path) -> None:
    """A user error prints its message alone; a crash keeps its traceback for the log."""
    (tmp_path / "script.py").write_text(SCRIPT)
    done = subprocess.run([sys.executable, "script.py", str(tmp_path), kind], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    final = read_events(tmp_path / "events.jsonl")[-1]
    assert (final["state"], final["error"], final["exit_code"]) == ("failed", kind, 1)
    if kind == "data":
        assert "Traceback" not in done.stderr and "rows 7, 9" in done.stdout and "rows 7, 9" in final["message"]
    else:
        assert "Traceback" in done.stderr and final["message"] == "ZeroDivisionError: division by zero"


# ---------------------------------------------------------------------------- the supervisor decides from the event
SPEC = ('name = "out"\n[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "completion"\nvalidation = 0\n'
        'max_length = 48\n[data.columns]\nprompt = "q"\ncompletion = "a"\n[method]\nkind = "lora"\n'
        '[train]\nmax_steps = 4\nbatch_size = 4\nmicro_batch_size = 4\n[hardware]\ndevice = "cpu"\n')


@pytest.fixture
def compiled(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    """A compiled spec and a run directory holding its plan.json, as `ftc run` lays it out."""
    from ftc.compiler.compile import compile_spec

    shutil.copytree(tiny_model, tmp_path / "tiny")
    write_jsonl(tmp_path / "d.jsonl", [{"q": f"say {w}", "a": w} for w in "red green blue cat dog".split() * 4])
    (tmp_path / "s.toml").write_text(SPEC)
    monkeypatch.chdir(tmp_path)
    result = compile_spec("s.toml", tmp_path / "out")
    result.write()
    target = tmp_path / "r"
    target.mkdir()
    shutil.copyfile(result.out_dir / "plan.json", target / "plan.json")
    return result, target


def _recover(compiled: tuple[Any, Path], final: dict[str, Any], code: int, *lines: str) -> Any:
    from rich.console import Console

    from ftc.cli.recover import recover

    result, target = compiled
    return recover(Console(quiet=True), result, target, EventLog(target / "events.jsonl"), final, code,
                    deque(lines))


def test_a_printed_exception_name_does_not_decide(compiled: tuple[Any, Path]) -> None:
    """The output names a DataError (once a reason to show only its message), the event says crash: the
    supervisor reports a crash, with the last lines of the log."""
    from ftc.core.errors import RunError

    final = {"type": "status", "state": "failed", "error": "crash", "exit_code": 1,
             "message": "KeyError: 'input_ids'"}
    with pytest.raises(RunError) as raised:
        _recover(compiled, final, 1, "ftc.core.data.encode.DataError: rows 3, 4 have no answer", "KeyError: 'x'")
    assert str(raised.value).startswith("training failed (exit code 1); last lines of ")
    assert "  | KeyError: 'x'" in str(raised.value)


def test_the_event_decides_the_message(compiled: tuple[Any, Path]) -> None:
    """The output names an out-of-memory error, the event says data: the event's message, and no retry."""
    from ftc.core.errors import RunError

    final = {"type": "status", "state": "failed", "error": "data", "exit_code": 1,
             "message": "d.jsonl: rows 3, 4 have no answer; map data.columns.completion"}
    with pytest.raises(RunError) as raised:
        _recover(compiled, final, 1, "torch.OutOfMemoryError: CUDA out of memory")
    assert str(raised.value).startswith("d.jsonl: rows 3, 4 have no answer; map data.columns.completion\n")
    assert not (compiled[1] / ckpt.OVERRIDES).exists()


def test_an_oom_event_retries_with_half_the_micro_batch(compiled: tuple[Any, Path]) -> None:
    final = {"type": "status", "state": "exiting", "error": "oom", "exit_code": ckpt.EXIT_OOM, "step": 2,
             "failed_step": 3, "micro_batch_size": 4, "message": "out of memory at step 3"}
    assert _recover(compiled, final, ckpt.EXIT_OOM) is None  # no checkpoint yet: from the start
    target = compiled[1]
    overrides = ckpt.read_overrides(target)
    assert (overrides["micro_batch_size"], overrides["grad_accum"]) == (2, 2)
    retry = read_events(target / "events.jsonl")[-1]
    assert (retry["type"], retry["reason"], retry["micro_batch_size"]) == ("retry", "oom", 2)
    plan = json.loads((target / "plan.json").read_text())
    assert (plan["settings"]["micro_batch_size"], plan["settings"]["grad_accum"]) == (2, 2)


def test_an_exit_code_without_its_event_is_a_crash(compiled: tuple[Any, Path]) -> None:
    """Exit 75 with the last event a running status (the script died some other way): no retry."""
    from ftc.core.errors import RunError

    with pytest.raises(RunError, match=r"training failed \(exit code 75\)"):
        _recover(compiled, {"type": "status", "state": "running", "step": 2}, ckpt.EXIT_OOM, "oom?")
    final = read_events(compiled[1] / "events.jsonl")[-1]
    assert (final["state"], final["error"], final["exit_code"]) == ("failed", "crash", 75)
    assert not (compiled[1] / ckpt.OVERRIDES).exists()


def test_a_rollback_lowers_the_learning_rate_in_overrides_and_plan(compiled: tuple[Any, Path]) -> None:
    result, target = compiled
    final = {"type": "status", "state": "exiting", "error": "nan", "exit_code": ckpt.EXIT_ROLLBACK, "step": 3,
             "failed_step": 4, "last_good_step": 2, "message": "step 4: NaN/inf gradients"}
    assert _recover(compiled, final, ckpt.EXIT_ROLLBACK) is None
    assert ckpt.read_overrides(target)["lr_scale"] == 0.5
    plan = json.loads((target / "plan.json").read_text())
    assert plan["settings"]["learning_rate"] == result.plan["learning_rate"] * 0.5
    retry = read_events(target / "events.jsonl")[-1]
    assert retry["learning_rate"] == result.plan["learning_rate"] * 0.5
