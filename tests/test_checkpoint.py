"""Run-directory state without training: publishing and rotating checkpoints, the lock, fault parsing,
the script's resume point, and early stopping."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftc.core import checkpoint as ckpt
from ftc.runtime import faults


def _stage(run: Path, step: int) -> Path:
    staged = ckpt.staging_dir(run) / f"checkpoint-{step}"
    staged.mkdir(parents=True)
    (staged / "adapter_model.safetensors").write_bytes(b"x" * 100)
    return staged


def _publish(run: Path, step: int, eval_loss: float | None = None) -> Path:
    return ckpt.publish(_stage(run, step), run, {"step": step, "eval_loss": eval_loss})


def test_publish_is_all_or_nothing(tmp_path: Path) -> None:
    _stage(tmp_path, 3)  # written by the Trainer, never published (a crash before the rename)
    assert ckpt.complete(tmp_path) == []
    path = _publish(tmp_path, 6)
    assert path == tmp_path / "checkpoints/checkpoint-6"
    assert json.loads((path / ckpt.MANIFEST).read_text())["step"] == 6
    (tmp_path / "checkpoints/checkpoint-9").mkdir()  # a folder without a manifest is not a checkpoint
    assert [c.step for c in ckpt.complete(tmp_path)] == [6]
    assert ckpt.clean_partial(tmp_path) == ["checkpoint-3"]
    assert not ckpt.staging_dir(tmp_path).exists()


def test_rotate_keeps_the_last_and_the_best(tmp_path: Path) -> None:
    for step, loss in ((2, 3.0), (4, 1.5), (6, 2.0), (8, None), (10, 2.5)):
        _publish(tmp_path, step, loss)
    removed = ckpt.rotate(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["checkpoint-2", "checkpoint-6"]
    assert [c.step for c in ckpt.complete(tmp_path)] == [4, 8, 10]
    assert ckpt.best(ckpt.complete(tmp_path)).step == 4  # type: ignore[union-attr]
    assert [p.name for p in ckpt.discard_after(tmp_path, 4)] == ["checkpoint-8", "checkpoint-10"]
    assert [c.step for c in ckpt.complete(tmp_path)] == [4]


def test_publishing_the_same_step_again_replaces_it(tmp_path: Path) -> None:
    _publish(tmp_path, 4, 2.0)
    _publish(tmp_path, 4, 1.0)  # after a rollback the step is trained again
    (only,) = ckpt.complete(tmp_path)
    assert only.manifest["eval_loss"] == 1.0
    assert not any(p.name.startswith(".trash") for p in (tmp_path / "checkpoints").iterdir())


def test_lock_is_exclusive_and_names_the_holder(tmp_path: Path) -> None:
    first = ckpt.RunLock(tmp_path)
    first.acquire()
    with pytest.raises(BlockingIOError, match=r'held by \{"pid": \d+\}'):
        ckpt.RunLock(tmp_path).acquire()
    first.release()
    second = ckpt.RunLock(tmp_path)
    second.acquire()
    second.release()


def test_data_fingerprint_follows_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.jsonl").write_text('{"x": 1}\n')
    first = ckpt.data_fingerprint("*.jsonl", None, 0.1)
    assert first == ckpt.data_fingerprint("*.jsonl", None, 0.1)
    (tmp_path / "a.jsonl").write_text('{"x": 2}\n')
    assert ckpt.data_fingerprint("*.jsonl", None, 0.1) != first
    assert ckpt.data_fingerprint(None, "org/dataset", 0.1) != ckpt.data_fingerprint(None, "org/other", 0.1)


def test_fault_parsing() -> None:
    assert faults.parse("oom@5, nan@3,") == [("oom", 5), ("nan", 3)]
    assert faults.without("oom@5,nan@3", [("oom", 5)]) == "nan@3"
    with pytest.raises(ValueError, match="cannot read 'boom@2'; use FAULT@STEP"):
        faults.parse("boom@2")
    with pytest.raises(ValueError, match="cannot read 'oom@0'"):
        faults.parse("oom@0")
    pending = faults.Faults("nan@3")
    assert not pending.take("nan", 2) and pending.take("nan", 3) and not pending.take("nan", 3)


def test_resume_point_refuses_to_mix_runs(tmp_path: Path) -> None:
    from ftc.runtime.guard import GuardError, resume_point

    assert resume_point(tmp_path, None) is None
    with pytest.raises(GuardError, match="has no complete checkpoint; start without --resume"):
        resume_point(tmp_path, "last")
    _publish(tmp_path, 4)
    with pytest.raises(GuardError, match=r"already has checkpoints \(the last at step 4\); continue it with --resume last"):
        resume_point(tmp_path, None)
    assert resume_point(tmp_path, "last") == str(tmp_path / "checkpoints/checkpoint-4")
    with pytest.raises(GuardError, match="not a complete ftc checkpoint"):
        resume_point(tmp_path, str(tmp_path))


def test_early_stopping_after_patience_evaluations(tmp_path: Path) -> None:
    from ftc.core.events import EventLog, read_events
    from ftc.runtime.stopping import EarlyStop
    from ftc.runtime.trainer import PrintingLog

    guard = EarlyStop(PrintingLog(EventLog(tmp_path / "events.jsonl")), patience=2)
    control = SimpleNamespace(should_training_stop=False)
    for step, loss in ((2, 3.0), (4, 2.0), (6, 2.5), (8, 1.9), (10, 2.0)):
        guard.on_evaluate(None, SimpleNamespace(global_step=step), control, metrics={"eval_loss": loss})
        assert not control.should_training_stop
    guard.on_evaluate(None, SimpleNamespace(global_step=12), control, metrics={"eval_loss": 1.95})
    assert control.should_training_stop
    (event,) = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "early_stop"]
    assert event["best_step"] == 8 and event["best_loss"] == 1.9
    assert "has not improved on 1.9000 (step 8) for 2 evaluations (patience 2)" in event["message"]


SPEC = """\
[model]
base = "model"
[data]
source = "d.jsonl"
format = "completion"
validation = {validation}
[data.columns]
prompt = "q"
completion = "a"
[method]
kind = "lora"
[train]
save_steps = 7
keep_checkpoints = 4
on_nan = "skip"
nan_patience = 5
early_stopping_patience = 2
[hardware]
device = "cpu"
"""


def _compile_train_keys(tmp_path: Path, validation: str) -> object:
    from helpers import write_jsonl

    from ftc.compiler import compile_spec

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4, "vocab_size": 100}))
    write_jsonl(tmp_path / "d.jsonl", [{"q": "x", "a": "y"}] * 10)
    (tmp_path / "s.toml").write_text(SPEC.format(validation=validation))
    return compile_spec(tmp_path / "s.toml")


def test_train_keys_reach_the_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _compile_train_keys(tmp_path, "0.2")
    script = result.emitted.files["train.py"]  # type: ignore[attr-defined]
    for line in ("SAVE_STEPS = 7", "KEEP_CHECKPOINTS = 4", "ON_NAN = 'skip'", "NAN_PATIENCE = 5",
                 "EARLY_STOPPING_PATIENCE = 2", "nan_patience=NAN_PATIENCE, patience=EARLY_STOPPING_PATIENCE)"):
        assert line in script, line


def test_early_stopping_needs_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler import SpecError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="train.early_stopping_patience needs validation data"):
        _compile_train_keys(tmp_path, "0")


def test_replace_folder_over_an_older_one(tmp_path: Path) -> None:
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "old.bin").write_text("old")
    (tmp_path / "final.partial").mkdir()
    (tmp_path / "final.partial" / "new.bin").write_text("new")
    ckpt.replace_folder(tmp_path / "final.partial", tmp_path / "final")
    assert [p.name for p in (tmp_path / "final").iterdir()] == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_library_versions_that_moved_since_a_checkpoint() -> None:
    from importlib.metadata import version

    from ftc.cli.supervise import _versions_moved

    torch_now = version("torch")
    assert _versions_moved({"torch": torch_now, "python": "2.7"}) == []
    assert _versions_moved({"torch": "0.1"}) == [f"torch 0.1 (now {torch_now})"]
