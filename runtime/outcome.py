"""How a training script ends: every way out becomes one `status` event with an error kind and the exit code (the fields
and codes: ftc.core.events), so that `ftc run` decides from the event (retry, roll back, report) and never reads the
script's output. `RunOutcome.watch()` covers the whole script (an error while the data or the model loads exits 1);
`with outcome.training(trainer):` adds the codes `ftc run` acts on."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from ftc.core import checkpoint as ckpt
from ftc.core.bundled import BundledModelError
from ftc.core.data.encode import DataError
from ftc.core.events import EventLog
from ftc.runtime import orphan, ranks
from ftc.runtime.evaluate import RegressionGate
from ftc.runtime.kernels import KernelMissing
from ftc.runtime.methods import MethodError

OOM_MARKERS = ("out of memory", "can't allocate memory", "MPS backend out of memory")


class GuardError(Exception):
    """A problem with the run directory the user must resolve (printed without a traceback)."""


class NonFiniteSteps(Exception):
    """Steps kept producing NaN/inf gradients; `rollback` says whether ftc run should roll back."""

    def __init__(self, message: str, *, rollback: bool, last_good_step: int) -> None:
        super().__init__(message)
        self.rollback, self.last_good_step = rollback, last_good_step


class StopRun(Exception):
    """Training ended early on purpose (kind "stopped" or "disk_full"); `reason` is what the status event says."""

    def __init__(self, reason: str, *, kind: str = "stopped") -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


class Interrupted(KeyboardInterrupt):
    """A signal that could not wait for a checkpoint: a second one (`at_once`), or one before training began."""

    def __init__(self, reason: str, *, at_once: bool) -> None:
        super().__init__(reason)
        self.reason, self.at_once = reason, at_once


USER_ERRORS = ((DataError, "data"), (BundledModelError, "bundled_model"), (MethodError, "method"),
               (GuardError, "run_dir"), (RegressionGate, "eval_gate"), (KernelMissing, "kernel"))
"""Errors whose message says what to fix: their status event carries it, and no traceback is printed."""


def error_kind(error: BaseException) -> str:
    """The `error` field of the status event for an exception (see the module docstring)."""
    if _is_oom(error):
        return "oom"
    if isinstance(error, NonFiniteSteps):
        return "nan"
    if isinstance(error, StopRun):
        return error.kind
    if ckpt.is_disk_full(error):
        return "disk_full"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return next((kind for cls, kind in USER_ERRORS if isinstance(error, cls)), "crash")


def _is_oom(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in OOM_MARKERS)


class RunOutcome:
    """See the module docstring. In train.py: `outcome = RunOutcome(events, RUN_DIR).watch()` at the top, then
    `with outcome.training(trainer): trainer.train(...)`."""

    def __init__(self, events: EventLog, run_dir: str | Path) -> None:
        self.events, self.run_dir = events, Path(run_dir)
        self.trainer: Any = None  # set by training(): the step and the micro-batch an error came at

    def watch(self) -> RunOutcome:
        """Report an error anywhere in the script (loading the data or the model too) as a status event, and stop
        the script when its `ftc run` dies (ftc.runtime.orphan)."""
        sys.excepthook = self._excepthook
        orphan.watch(self.events, self.run_dir, began=lambda: self.trainer is not None)
        return self

    def training(self, trainer: Any) -> RunOutcome:
        self.trainer = trainer
        return self

    def __enter__(self) -> RunOutcome:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> bool:
        if ranks.RANK == 0:  # after success too: TRL leaves its model card (README.md) there; one process
            ckpt.clean_partial(self.run_dir)  # cleans, or the others race it to the same folder
        if error is None or isinstance(error, SystemExit):
            return False
        raise SystemExit(self.report(error, training=True))

    def _excepthook(self, kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        self.report(error, training=False)  # Python then exits with 1 (130 after Ctrl-C)

    def report(self, error: BaseException, *, training: bool) -> int:
        """Write the status event for `error` (and the event the monitor counts it by), print its message
        (and a crash's traceback); the exit code."""
        kind = error_kind(error)
        if kind == "crash":
            traceback.print_exception(error)
        step = getattr(getattr(self.trainer, "state", None), "global_step", 0)
        last = ckpt.latest(self.run_dir)
        message, fields = self._describe(kind, error, step, last)
        code = {"oom": ckpt.EXIT_OOM, "stopped": ckpt.EXIT_STOPPED, "disk_full": ckpt.EXIT_STOPPED,
                "interrupted": 130}.get(kind, 1)
        if kind == "nan" and getattr(error, "rollback", False):
            code = ckpt.EXIT_ROLLBACK
        if not training and code != 130:  # outside trainer.train() no step can be retried or resumed
            code = 1
        final = "stopped" if code in (ckpt.EXIT_STOPPED, 130) else "exiting" if code != 1 else "failed"
        self.events.write("status", message, state=final, error=kind, exit_code=code, step=step, **fields)
        print(message, flush=True)
        return code

    def _describe(self, kind: str, error: BaseException, step: int, last: ckpt.Checkpoint | None
                  ) -> tuple[str, dict[str, Any]]:
        """The status message and the extra fields for each kind of error."""
        kept = f"the last checkpoint is step {last.step}" if last else "no checkpoint was saved"
        where = {"checkpoint": str(last.path) if last else None}
        if kind == "oom":
            micro = self.trainer.args.per_device_train_batch_size if self.trainer is not None else None
            message = f"out of memory at step {step + 1} with micro-batch {micro}: {str(error).splitlines()[0]}; {kept}"
            self.events.write("oom", message, step=step + 1, micro_batch_size=micro)  # the monitor counts these
            return message, {"micro_batch_size": micro, "failed_step": step + 1}
        if kind == "nan":
            good = getattr(error, "last_good_step", step)
            if getattr(error, "rollback", False):
                self.events.write("nan", str(error), step=step + 1, rollback=True, last_good_step=good)
            return str(error), {"last_good_step": good, "failed_step": step + 1}
        if isinstance(error, StopRun):  # a stop request or a full disk ended training after saving what it could
            resume = (f"checkpoint {last.path} holds step {last.step}. Resume: ftc run SPEC --run-dir {self.run_dir} "
                      f"(or python {sys.argv[0]} {self.run_dir} --resume last)" if last
                      else "no checkpoint was saved, so a rerun starts over")
            return f"stopped at step {step} ({error}); {resume}", {"reason": str(error), **where}
        if kind == "disk_full":  # a checkpoint write failed half-way
            message = (f"disk full while writing checkpoint {step} ({error}); it was discarded and {kept}; "
                       f"free some space, then resume")
            self.events.write("disk_full", message, step=step)
            return message, {"reason": "disk_full", **where}
        if kind == "interrupted":
            reason = getattr(error, "reason", "interrupted")
            message = (f"stopped at once during step {step + 1}; {kept}; steps after it are lost"
                       if getattr(error, "at_once", False) else f"stopped before training began ({reason}); {kept}")
            return message, {"reason": "interrupted", **where}
        if kind == "crash":
            return f"{type(error).__name__}: {error}", {}
        return str(error), {}
