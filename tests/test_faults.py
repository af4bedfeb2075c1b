"""The run's callbacks in process, on a small torch module (no Trainer, no subprocess): a non-finite step is
skipped (no weight update), and `skip`, `rollback` and `stop` end as documented; signals and stop files."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ftc.core.events import EventLog, read_events


def _nan_policy(tmp_path: Path, **kwargs: Any) -> Any:
    from ftc.runtime.nan import NanPolicy
    from ftc.runtime.trainer import PrintingLog

    return NanPolicy(PrintingLog(EventLog(tmp_path / "events.jsonl")), tmp_path, **kwargs)


def _stop_requests(tmp_path: Path) -> Any:
    from ftc.runtime.stopping import StopRequests
    from ftc.runtime.trainer import PrintingLog

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return StopRequests(PrintingLog(EventLog(tmp_path / "events.jsonl")), tmp_path)
    finally:  # the callback installs its own handlers; pytest's stay in place
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _step(guard: Any, model: Any, step: int, *, nan: bool) -> None:
    """One optimizer step as the Trainer runs it: backward, the NaN policy's pre-step check, AdamW."""
    import torch

    optimizer = getattr(model, "optimizer", None) or torch.optim.AdamW(model.parameters(), lr=0.1)
    model.optimizer = optimizer
    loss = model(torch.ones(1, 4)).sum() * (float("nan") if nan else 1.0)
    loss.backward()
    guard.on_pre_optimizer_step(None, SimpleNamespace(global_step=step - 1), None, model=model)
    optimizer.step()
    optimizer.zero_grad()


def _model() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Linear(4, 2)


def test_skip_leaves_the_weights_untouched_then_stops(tmp_path: Path) -> None:
    import torch

    from ftc.runtime.outcome import NonFiniteSteps

    guard, model = _nan_policy(tmp_path, on_nan="skip", nan_patience=2), _model()
    _step(guard, model, 1, nan=False)
    before = model.weight.detach().clone()
    _step(guard, model, 2, nan=True)
    assert torch.equal(model.weight, before)  # skipped: no update, no NaN in the weights
    _step(guard, model, 3, nan=False)  # a good step resets the streak
    _step(guard, model, 4, nan=True)
    with pytest.raises(NonFiniteSteps) as raised:
        _step(guard, model, 5, nan=True)
    assert not raised.value.rollback and raised.value.last_good_step == 3
    assert "step 5: NaN/inf gradients in 2 steps in a row (on_nan = 'skip'); stopping." in str(raised.value)
    assert torch.isfinite(model.weight).all()
    assert [e["step"] for e in read_events(tmp_path / "events.jsonl") if e["type"] == "nan"] == [2, 4]


def test_rollback_asks_for_one_until_the_limit(tmp_path: Path) -> None:
    from ftc.core import checkpoint as ckpt
    from ftc.runtime.nan import MAX_ROLLBACKS
    from ftc.runtime.outcome import NonFiniteSteps

    guard, model = _nan_policy(tmp_path, on_nan="rollback", nan_patience=1), _model()
    _step(guard, model, 1, nan=False)
    with pytest.raises(NonFiniteSteps) as raised:
        _step(guard, model, 2, nan=True)
    assert raised.value.rollback and raised.value.last_good_step == 1
    assert "rolling back to the last good checkpoint (step 1 or before) with half the learning rate" in str(raised.value)
    ckpt.write_overrides(tmp_path, {"micro_batch_size": 1, "grad_accum": 1, "rollbacks": MAX_ROLLBACKS})
    guard, model = _nan_policy(tmp_path, on_nan="rollback", nan_patience=1), _model()
    with pytest.raises(NonFiniteSteps) as raised:
        _step(guard, model, 2, nan=True)
    assert not raised.value.rollback and "2 rollback(s) done" in str(raised.value)


def test_stop_stops_at_the_first(tmp_path: Path) -> None:
    from ftc.runtime.outcome import NonFiniteSteps

    guard, model = _nan_policy(tmp_path, on_nan="stop", nan_patience=5), _model()
    with pytest.raises(NonFiniteSteps, match=r"step 1: NaN/inf gradients \(on_nan = 'stop'\); stopping\."):
        _step(guard, model, 1, nan=True)


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    from ftc.runtime.outcome import Interrupted

    stop = _stop_requests(tmp_path)
    previous = signal.getsignal(signal.SIGINT)
    try:
        stop.on_signal(signal.SIGTERM, None)
        assert stop.reason == "SIGTERM received"
        with pytest.raises(Interrupted) as raised:
            stop.on_signal(signal.SIGINT, None)
        assert raised.value.at_once
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_stop_file_saves_then_stops(tmp_path: Path) -> None:
    from ftc.core import control

    from ftc.runtime.outcome import StopRun

    stop = _stop_requests(tmp_path)
    control.request(tmp_path, "stop")
    flags = SimpleNamespace(should_save=False, should_training_stop=False)
    stop.on_step_end(None, SimpleNamespace(global_step=7), flags)
    assert flags.should_save and flags.should_training_stop
    assert stop.reason.startswith("stop requested (")
    with pytest.raises(StopRun, match=r"^stop requested \("):  # once the checkpoint is saved, the run ends "stopped"
        stop.on_train_end(None, SimpleNamespace(global_step=7), flags)
    (event,) = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "status"]
    assert event["state"] == "stopping" and event["step"] == 7
    assert control.take(tmp_path) == set()  # taken once
