"""Callbacks that end training early, on purpose.

- `StopRequests`: Ctrl-C, SIGTERM or RUN_DIR/control/stop finish the current step, save a checkpoint and end
  the run as "stopped" (a second signal stops at once); RUN_DIR/control/checkpoint saves one and goes on;
- `EarlyStop`: validation loss that stops improving for `patience` evaluations ends training (completed).
"""

from __future__ import annotations

import math
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from ftc.core import control as control_files
from ftc.runtime import ranks
from ftc.runtime.outcome import Interrupted, StopRun
from ftc.runtime.trainer import PrintingLog


class StopRequests(TrainerCallback):  # type: ignore[misc]
    """Signals and control files, acted on after an optimizer step (see the module docstring)."""

    def __init__(self, events: PrintingLog, run_dir: str | Path) -> None:
        self.events, self.run_dir = events, Path(run_dir)
        self.reason: str | None = None
        self.signals = 0
        self._stopping = False
        self._previous_handlers = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals += 1
        if self.signals > 1:  # the second one: stop now; the last complete checkpoint stays as it is
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise Interrupted(name, at_once=True)
        self.reason = f"{name} received"
        print(f"{name}: finishing the current step, then saving a checkpoint and stopping "
              f"(send it again to stop at once)", flush=True)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reason:  # a signal while the model and data loaded: nothing new to save
            raise Interrupted(self.reason, at_once=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        actions = control_files.take(self.run_dir) if ranks.RANK == 0 else set()  # rank 0 reads the control files
        save, stop, signalled = ranks.agree("checkpoint" in actions, "stop" in actions, self.reason is not None)
        if save:
            control.should_save = True
            self.events.write("control", f"checkpoint requested at step {step}", step=step)
        if stop and self.reason is None:
            self.reason = f"stop requested ({control_files.control_dir(self.run_dir) / 'stop'})"
        if signalled and self.reason is None:  # another process received the signal: every one stops together
            self.reason = "a signal reached another process"
        if self.reason and not self._stopping:
            self._stopping = True
            control.should_save = control.should_training_stop = True
            self.events.write("status", f"{self.reason}: saving a checkpoint at step {step} and stopping",
                              state="stopping", step=step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.reason is not None:  # the checkpoint is saved: end as "stopped", with how to resume
            raise StopRun(self.reason)
        for sig, handler in self._previous_handlers.items():  # from here on Ctrl-C interrupts the final save as usual
            signal.signal(sig, handler)


class EarlyStop(TrainerCallback):  # type: ignore[misc]
    """Stops when validation loss has not improved for `patience` evaluations (None: never); its state goes
    into each checkpoint's manifest (`state()`) and comes back from the resumed one."""

    def __init__(self, events: PrintingLog, patience: int | None, resumed: dict[str, Any] | None = None) -> None:
        self.events, self.patience = events, patience
        saved = (resumed or {}).get("guard", {})
        self.best_eval: float | None = saved.get("best_eval")
        self.best_step: int | None = saved.get("best_step")
        self.bad_evals: int = saved.get("bad_evals", 0)
        self.eval_at: tuple[int, float] | None = None

    def state(self) -> dict[str, Any]:
        return {"best_eval": self.best_eval, "best_step": self.best_step, "bad_evals": self.bad_evals}

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        loss = (metrics or {}).get("eval_loss")
        if loss is None or not math.isfinite(loss):
            return
        step = state.global_step
        self.eval_at = (step, loss)
        if self.best_eval is None or loss < self.best_eval:
            self.best_eval, self.best_step, self.bad_evals = loss, step, 0
            return
        self.bad_evals += 1
        if self.patience and self.bad_evals >= self.patience:
            control.should_training_stop = True
            self.events.write("early_stop", f"early stopping at step {step}: validation loss {loss:.4f} has not "
                              f"improved on {self.best_eval:.4f} (step {self.best_step}) for {self.bad_evals} "
                              f"evaluations (patience {self.patience})", step=step, best_loss=self.best_eval,
                              best_step=self.best_step)
