"""events.jsonl -> RunState, read incrementally (the contract between the runtime and the monitor)."""

from __future__ import annotations

import json
from pathlib import Path

from ftc.core.events import EventLog, EventTail
from ftc.tui.state import RunState, read_state


def test_tail_reads_only_new_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # not written yet
    log = EventLog(path)
    log.write("status", state="running", total_steps=10)
    with path.open("a") as handle:
        handle.write('{"type": "step", "step": 1, "lo')  # a writer caught mid-line
    assert [e["type"] for e in tail.read()] == ["status"]
    with path.open("a") as handle:
        handle.write('ss": 2.5}\n')
    assert tail.read() == [{"type": "step", "step": 1, "loss": 2.5}]
    assert tail.read() == []


def test_torn_line_from_a_crash_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"type": "step", "step": 1, "loss": 3.0}\n{"type": "st\n{"type": "step", "step": 2, "loss": 2.0}\n')
    state = read_state(tmp_path)
    assert state.train_loss == [(1, 3.0), (2, 2.0)] and state.events == 2


def test_state_folds_a_whole_run(tmp_path: Path) -> None:
    events = [
        {"type": "status", "time": 100.0, "state": "starting"},
        {"type": "start", "time": 101.0, "config": {"LORA_R": 8}},
        {"type": "params", "time": 102.0, "trainable": 10, "total": 1000},
        {"type": "status", "time": 103.0, "state": "running", "step": 0, "total_steps": 10},
        {"type": "step", "time": 110.0, "step": 2, "total_steps": 10, "loss": 2.0, "learning_rate": 1e-3,
         "tokens_per_s": 100.0, "epoch": 0.2},
        {"type": "step", "time": 118.0, "step": 4, "total_steps": 10, "loss": 1.0, "learning_rate": 9e-4,
         "tokens_per_s": 120.0, "epoch": 0.4},
        {"type": "eval", "time": 119.0, "step": 4, "loss": 1.5},
        {"type": "checkpoint", "time": 120.0, "step": 4, "path": "checkpoints/checkpoint-4"},
        {"type": "warning", "time": 121.0, "message": "train: 3 examples were truncated"},
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    state = read_state(tmp_path)
    assert (state.state, state.step, state.total_steps, state.epoch) == ("running", 4, 10, 0.4)
    assert state.train_loss == [(2, 2.0), (4, 1.0)] and state.best_eval_loss == 1.5
    assert state.checkpoints == [(4, "checkpoints/checkpoint-4")]
    assert state.warnings == ["train: 3 examples were truncated"]
    assert (state.trainable_params, state.total_params, state.config) == (10, 1000, {"LORA_R": 8})
    assert state.elapsed == 21.0
    assert state.eta() == (121.0 - 110.0) / 2 * 6  # 5.5 s per step since the first step event, 6 steps left
    state.apply({"type": "status", "time": 130.0, "state": "completed", "output": "final"})
    assert state.finished and state.eta() is None and state.output == "final"


def test_large_run_reads_incrementally(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps({"type": "step", "time": float(i), "step": i, "loss": 1.0 / i}) + "\n"
                            for i in range(1, 100_001)))
    tail, state = EventTail(path), RunState()
    state.extend(tail.read())
    assert state.step == 100_000 and len(state.train_loss) == 100_000
    with path.open("a") as handle:
        handle.write(json.dumps({"type": "status", "state": "completed"}) + "\n")
    new = tail.read()
    assert len(new) == 1 and state.extend(new).finished


def test_ftc_runs_lists_runs(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ftc.cli.main import main

    monkeypatch.setenv("COLUMNS", "160")  # rich reads the width from here when there is no terminal
    for name, state in (("demo/a", "completed"), ("demo/[red]b", "failed")):
        log = EventLog(tmp_path / name / "events.jsonl")
        log.write("step", step=3, total_steps=3, loss=0.5)
        log.write("eval", step=3, loss=0.25)
        log.write("status", state=state)
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "demo/a" in out and "demo/[red]b" in out and "completed" in out and "failed" in out
    assert "0.2500" in out and "3/3" in out
    assert main(["runs", str(tmp_path / "none")]) == 0
    assert "no runs under" in capsys.readouterr().out


def test_recovery_events_fold_the_same_however_the_file_is_read(tmp_path: Path) -> None:
    """A run with an OOM retry and a NaN rollback (each a resume that re-does steps), read in pieces as a live
    monitor reads it (lines cut anywhere), folds to the same state as when it is read whole."""
    recorded = (Path(__file__).parent / "fixtures" / "recorded" / "faults" / "events.jsonl").read_bytes()
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"")
    tail, live = EventTail(path), RunState()
    for start in range(0, len(recorded), 97):
        with path.open("ab") as handle:
            handle.write(recorded[start:start + 97])
        live.extend(tail.read())
    whole = read_state(tmp_path)
    assert live == whole and whole.events == 54
    assert [s for s, _ in whole.train_loss] == list(range(1, 13)) and whole.step == 12
