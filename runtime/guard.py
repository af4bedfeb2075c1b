"""What keeps a run recoverable: the Trainer callbacks of a run, one small callback per job (events, stop requests, NaN
policy, early stop, checkpoints, fault injection when FTC_INJECT asks, the learning-rate range test when
FTC_LR_RANGE asks), and the outcome wrapper that ends the script
(ftc.runtime.outcome). Imported only by training scripts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftc.core import checkpoint as ckpt
from ftc.core.events import EventLog
from ftc.runtime import faults
from ftc.runtime.checkpoints import Checkpoints, resume_point
from ftc.runtime.nan import NanPolicy
from ftc.runtime.outcome import GuardError, RunOutcome
from ftc.runtime.stopping import EarlyStop, StopRequests
from ftc.runtime.trainer import EventsCallback, PrintingLog

__all__ = ["GuardError", "RunOutcome", "attach", "resume_point", "run_callbacks"]


def run_callbacks(events: EventLog, run_dir: str | os.PathLike[str], config: dict[str, Any], *, resume: str | None,
                  keep: int, on_nan: str = "rollback", nan_patience: int = 3, patience: int | None = None
                  ) -> list[TrainerCallback]:
    """The Trainer callbacks of a run, in the order they must act (a stop request before the free-space check,
    injected faults before the checks that catch them). Installs the Ctrl-C/SIGTERM handlers."""
    log = PrintingLog(events)
    try:
        pending = faults.Faults()
    except ValueError as exc:  # a typo in FTC_INJECT: say so instead of silently injecting nothing
        raise GuardError(str(exc)) from None
    resumed = ckpt.complete_manifest(resume) if resume else None
    early_stop = EarlyStop(log, patience, resumed)
    checkpoints = Checkpoints(log, run_dir, config, resume=resume, keep=keep, early_stop=early_stop)
    callbacks: list[TrainerCallback] = [EventsCallback(events), StopRequests(log, Path(run_dir))]
    if os.environ.get("FTC_LR_RANGE"):  # ftc compile's learning-rate range test (learning_rate = "auto")
        from ftc.runtime.lrrange import LrRangeTest, sweep

        try:
            asked = sweep()
        except ValueError as exc:
            raise GuardError(str(exc)) from None
        callbacks.insert(0, LrRangeTest(log, asked or {}))
    if pending.pending:
        from ftc.runtime.inject import FaultInjection

        callbacks.append(FaultInjection(log, pending, checkpoints))
    nan = NanPolicy(log, run_dir, on_nan=on_nan, nan_patience=nan_patience,
                    last_good_step=resumed["step"] if resumed else 0)
    return [*callbacks, nan, early_stop, checkpoints]


def attach(trainer: Any) -> None:
    """Hand the trainer to the callbacks that read it: the NaN policy (NanPolicy.attach)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, NanPolicy):
            callback.attach(trainer)
