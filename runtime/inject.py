"""The fault-injection callback (FTC_INJECT, see ftc.runtime.faults): added to a run's callbacks only when
FTC_INJECT is set, so no production path carries a test hook. Each fault fires once, writes a `fault` event,
then does what the real fault does, through the same code a real one goes through."""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from ftc.runtime.checkpoints import Checkpoints
from ftc.runtime.faults import Faults
from ftc.runtime.trainer import PrintingLog


class FaultInjection(TrainerCallback):  # type: ignore[misc]
    """Placed after StopRequests and before NanPolicy and Checkpoints: its NaN gradients reach the NaN check,
    its full disk reaches the free-space check, its failed write comes before the checkpoint is published."""

    def __init__(self, events: PrintingLog, faults: Faults, checkpoints: Checkpoints) -> None:
        self.events, self.faults, self.checkpoints = events, faults, checkpoints
        self._nan_hook: Any = None

    def _fires(self, kind: str, step: int) -> bool:
        if not self.faults.take(kind, step):
            return False
        self.events.write("fault", f"injected fault {kind}@{step} (FTC_INJECT)", kind=kind, step=step)
        return True

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step + 1
        if self._fires("oom", step):
            raise torch.OutOfMemoryError(f"CUDA out of memory at step {step} (injected by FTC_INJECT)")
        if self._fires("crash", step):
            os.kill(os.getpid(), signal.SIGKILL)
        for kind in ("sigterm", "sigint"):
            if self._fires(kind, step):
                os.kill(os.getpid(), getattr(signal, kind.upper()))
        if getattr(args, "deepspeed", None) and model is not None and self._fires("nan", step):
            # DeepSpeed takes the gradients into its engine during backward and steps there: the NaN goes into
            # one trained parameter's gradient as autograd computes it, in every micro-batch of the step
            first = next(p for p in model.parameters() if p.requires_grad)
            self._nan_hook = first.register_hook(lambda grad: torch.full_like(grad, float("nan")))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self._nan_hook is not None:  # DeepSpeed has stepped (or skipped) with the NaN gradients
            self._nan_hook.remove()
            self._nan_hook = None
            return
        params = [p for p in model.parameters() if p.grad is not None] if model is not None else []
        if params and self._fires("nan", state.global_step + 1):
            params[0].grad.fill_(float("nan"))  # as a NaN loss gives

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if control.should_save and self._fires("diskfull", state.global_step):
            self.checkpoints.check_disk(state.global_step, control, model, free=0)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        staged = Path(args.output_dir) / f"checkpoint-{step}"
        if self._fires("enospc", step):
            raise OSError(errno.ENOSPC, f"No space left on device (injected while writing {staged})")
        if self._fires("savecrash", step):
            os.kill(os.getpid(), signal.SIGKILL)
