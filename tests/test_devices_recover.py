"""Out of memory and NaN gradients in ONE of 2 CPU processes (gloo; DDP, DeepSpeed ZeRO-2 and ZeRO-3): `ftc run`
recovers the whole job.

torchrun exits 1 whichever rank failed and ends the others, so `ftc run` takes the outcome from the first
process whose status asks for a retry (cli/recover.py ranks_outcome); NaN gradients on one rank skip the step
on every rank (runtime/nan.py agrees through ranks.agree), or the replicas would part ways. FTC_INJECT_RANK
makes one rank raise the injected fault (runtime/faults.py). Under DeepSpeed the gradients live in its engine,
which has stepped by the time the NaN policy looks: the policy reads the engine's outcome (the step skipped for a
non-finite global gradient norm, all-reduced), and the injection puts the NaN into a gradient as autograd makes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_ftc
from test_devices_run import _losses, _run, _write

from ftc.cli.recover import ranks_outcome
from ftc.core import checkpoint as ckpt


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _write_events(path: Path, events: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"time": 1.0, "message": "m", **e}) + "\n" for e in events))


def test_the_outcome_of_a_job_is_the_rank_that_ran_out_of_memory(tmp_path: Path) -> None:
    """Rank 0 crashed (its peer vanished) and torchrun exited 1; rank 1's status says out of memory: that is
    the outcome. Events rank 1 wrote before the attempt are not read again; one process is left as it is."""
    crash = {"type": "status", "state": "failed", "error": "crash", "exit_code": 1, "step": 2}
    oom = {"type": "status", "state": "exiting", "error": "oom", "exit_code": ckpt.EXIT_OOM, "step": 2,
           "failed_step": 3, "micro_batch_size": 2}
    log = tmp_path / "ranks" / "1" / "events.jsonl"
    _write_events(log, [{"type": "status", "state": "exiting", "error": "oom", "exit_code": ckpt.EXIT_OOM, "step": 0}])
    before = {log: 1}  # an earlier attempt's OOM, already recovered from
    assert ranks_outcome(tmp_path, before, crash, 1, distributed=True)[:2] == (crash, 1)
    _write_events(log, [{"type": "status", "state": "exiting", "error": "oom", "exit_code": ckpt.EXIT_OOM, "step": 0},
                        {"type": "fault", "kind": "oom", "step": 3}, oom])
    final, code, others = ranks_outcome(tmp_path, before, crash, 1, distributed=True)
    assert (final["error"], final["failed_step"], code) == ("oom", 3, ckpt.EXIT_OOM)
    assert [e["type"] for e in others] == ["fault", "status"]
    assert ranks_outcome(tmp_path, before, crash, 1, distributed=False)[:2] == (crash, 1)
    rollback = {"type": "status", "state": "exiting", "error": "nan", "exit_code": ckpt.EXIT_ROLLBACK, "step": 2}
    assert ranks_outcome(tmp_path, {log: 3}, rollback, 1, distributed=True)[:2] == (rollback, ckpt.EXIT_ROLLBACK)


def test_nan_gradients_on_one_rank_skip_the_step_on_both(tiny_model: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN gradients injected on rank 1 only at step 3: rank 0 skips the step too (its `nan` event), and the
    run ends with its 4 steps."""
    monkeypatch.setenv("FTC_INJECT", "nan@3")
    monkeypatch.setenv("FTC_INJECT_RANK", "1")
    losses, run = _run(tmp_path, tiny_model, 2)
    assert len(losses) == 4
    assert [e["step"] for e in _events(run / "events.jsonl") if e["type"] == "nan"] == [3]
    assert not [e for e in _events(run / "events.jsonl") if e["type"] == "fault"]  # rank 0 injected nothing
    assert [e["step"] for e in _events(run / "ranks" / "1" / "events.jsonl") if e["type"] == "fault"] == [3]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "zero3"])
def test_one_rank_out_of_memory_retries_both_with_half_the_micro_batch(strategy: str, tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory on rank 1 at step 3: `ftc run` retries both ranks from checkpoint 2 with micro-batch 1 x 4
    (the same effective batch) and every step ends within 1 % of the uninterrupted 1-process run. Under ZeRO-3
    (+ zero.Init) checkpoint 2 is DeepSpeed's own partitioned checkpoint, resumed at the same world size."""
    if strategy == "zero3":
        pytest.importorskip("deepspeed")
    reference, _ = _run(tmp_path / "one", tiny_model, 1)
    folder = tmp_path / "two"
    _write(folder, tiny_model, 2, f'strategy = "{strategy}"\n')
    monkeypatch.setenv("FTC_INJECT", "oom@3")
    monkeypatch.setenv("FTC_INJECT_RANK", "1")
    done = run_ftc("run", "s.toml", "--run-dir", "run", "--no-tui", cwd=folder, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = _events(folder / "run" / "events.jsonl")
    retry = next(e for e in events if e["type"] == "retry")
    assert (retry["reason"], retry["micro_batch_size"], retry["grad_accum"]) == ("oom", 1, 4)
    assert retry["resume"].endswith("checkpoint-2")
    losses = {e["step"]: e["loss"] for e in events if e["type"] == "step"}  # the retried steps last
    assert max(losses) == 4 and (strategy != "ddp" or _losses(folder / "run"))
    for step, one in enumerate(reference, start=1):
        assert abs(losses[step] - one) <= 0.01 * abs(one), (losses, reference)


def _finite(run: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(run / "final" / "adapter_model.safetensors"))
    return all(bool(torch.isfinite(t).all()) for t in tensors.values())


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["zero2", "zero3"])
def test_nan_gradients_on_one_rank_under_deepspeed_skip_the_step_on_both(strategy: str, tiny_model: Path,
                                                                         tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN gradients injected on rank 1 only at step 3 under ZeRO: DeepSpeed skips the update on both ranks (its
    overflow check is all-reduced), the NaN policy sees it on rank 0 (a `nan` event; before, nothing was caught),
    the run ends with its 4 steps and the saved adapter is finite (the NaN never reached the weights)."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("FTC_INJECT", "nan@3")
    monkeypatch.setenv("FTC_INJECT_RANK", "1")
    losses, run = _run(tmp_path, tiny_model, 2, f'strategy = "{strategy}"\n')
    assert len(losses) == 4 and all(loss == loss for loss in losses)
    assert [e["step"] for e in _events(run / "events.jsonl") if e["type"] == "nan"] == [3]
    assert not [e for e in _events(run / "events.jsonl") if e["type"] == "fault"]  # rank 0 injected nothing
    assert [e["step"] for e in _events(run / "ranks" / "1" / "events.jsonl") if e["type"] == "fault"] == [3]
    assert [e["step"] for e in _events(run / "ranks" / "1" / "events.jsonl") if e["type"] == "nan"] == [3]
    assert _finite(run)


@pytest.mark.slow
def test_nan_stop_under_zero3_stops_both_ranks_with_a_diagnosis(tiny_model: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """on_nan = "stop" under ZeRO-3: NaN on rank 1 at step 2 stops the job there; the diagnosis names the step's
    rows without the per-row forward (every ZeRO-3 forward gathers from all processes)."""
    pytest.importorskip("deepspeed")
    monkeypatch.setenv("FTC_INJECT", "nan@2")
    monkeypatch.setenv("FTC_INJECT_RANK", "1")
    folder = tmp_path / "stop"
    _write(folder, tiny_model, 2, 'strategy = "zero3"\n')
    spec = folder / "s.toml"
    spec.write_text(spec.read_text().replace("save_steps = 2\n", "save_steps = 2\non_nan = \"stop\"\n"))
    done = run_ftc("run", "s.toml", "--run-dir", "run", "--no-tui", cwd=folder, timeout=1200)
    assert done.returncode != 0
    status = [e for e in _events(folder / "run" / "events.jsonl") if e["type"] == "status"][-1]
    assert status["error"] == "nan" and "step 2: NaN/inf gradients" in status["message"], status
    assert "no per-row check under ZeRO-3" in status["message"]


