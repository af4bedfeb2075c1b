"""RunGuard: the Trainer callback that keeps a run recoverable. Imported only by training scripts.

- checkpoints: the Trainer writes each one into RUN_DIR/checkpoints.partial/; the guard adds a manifest
  (versions, config, data fingerprint, seed, position, validation loss), flushes it and renames it into
  RUN_DIR/checkpoints/, then keeps the last K and the best by validation loss (ftc.core.checkpoint);
- stopping: Ctrl-C, SIGTERM or RUN_DIR/control/stop finish the current step, save a checkpoint and end
  with state "stopped" and how to resume; a second signal stops at once;
- faults: out of memory, NaN/inf gradients (the on_nan policy), a full disk, early stopping on
  validation loss; each becomes an event and, where `ftc run` can recover, an exit code it acts on;
- fault injection for tests (FTC_INJECT, see ftc.runtime.faults).
"""

from __future__ import annotations

import errno
import math
import os
import platform
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import torch
from transformers import TrainerCallback

from ftc.core import checkpoint as ckpt
from ftc.core import control as control_files
from ftc.core.events import EventLog
from ftc.runtime.faults import Faults
from ftc.runtime.trainer import _PrintingLog

MAX_ROLLBACKS = 2
"""NaN rollbacks per run (each halves the learning rate) before the run stops with a diagnosis."""
DISK_MARGIN = 1.2
"""Free space needed before a checkpoint, as a multiple of the previous checkpoint's size."""
FP16_OVERFLOWS = 16
"""Steps in a row with inf gradients that fp16 loss scaling may take to calibrate (2**16 halved to 1)."""
OOM_MARKERS = ("out of memory", "can't allocate memory", "MPS backend out of memory")


class GuardError(Exception):
    """A problem with the run directory the user must resolve (printed without a traceback)."""


class NonFiniteSteps(Exception):
    """Steps kept producing NaN/inf gradients; `rollback` says whether ftc run should roll back."""

    def __init__(self, message: str, *, rollback: bool, last_good_step: int) -> None:
        super().__init__(message)
        self.rollback = rollback
        self.last_good_step = last_good_step


def resume_point(run_dir: str | os.PathLike[str], requested: str | None) -> str | None:
    """The checkpoint folder to continue from: `requested` is a path, "last" or None (a fresh start,
    refused when the run directory already has checkpoints that it would mix with)."""
    ckpt.clean_partial(run_dir)
    last = ckpt.latest(run_dir)
    if requested is None:
        if last is not None:
            raise GuardError(f"{run_dir} already has checkpoints (the last at step {last.step}); continue it with "
                             f"--resume last, or pass another RUN_DIR to start over")
        return None
    if requested == "last":
        if last is None:
            raise GuardError(f"--resume last: {Path(run_dir) / ckpt.FOLDER} has no complete checkpoint; "
                             "start without --resume")
        return str(last.path)
    if not (Path(requested) / ckpt.MANIFEST).is_file():
        raise GuardError(f"--resume {requested}: not a complete ftc checkpoint (no {ckpt.MANIFEST} in it); "
                         f"use one of {Path(run_dir) / ckpt.FOLDER}/checkpoint-N or 'last'")
    return requested


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("ftc", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _is_oom(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(m in str(error) for m in OOM_MARKERS)


class RunGuard(TrainerCallback):  # type: ignore[misc]
    """See the module docstring. Use: `guard = RunGuard(...)`, pass it in the Trainer's callbacks, call
    `guard.attach(trainer)`, train inside `with guard:`, then `guard.exit_if_stopped()`."""

    def __init__(self, events: EventLog, run_dir: str | os.PathLike[str], config: dict[str, Any], *,
                 resume: str | None, keep: int, on_nan: str = "rollback", nan_patience: int = 3,
                 patience: int | None = None) -> None:
        self.events = _PrintingLog(events)
        self.run_dir = Path(run_dir)
        self.config = config
        self.resume = resume
        self.keep, self.on_nan, self.nan_patience, self.patience = keep, on_nan, nan_patience, patience
        try:
            self.faults = Faults()
        except ValueError as exc:  # a typo in FTC_INJECT: say so instead of silently injecting nothing
            raise GuardError(str(exc)) from None
        self.overrides = ckpt.read_overrides(run_dir)
        self.resumed = ckpt.complete_manifest(resume) if resume else None
        self.data_sha256 = ckpt.data_fingerprint(config.get("DATA_FILES"), config.get("DATA_SOURCE"),
                                                 config.get("VALIDATION"))
        self.script_sha256 = ckpt.file_sha256(sys.argv[0]) if os.path.isfile(sys.argv[0]) else None
        state = (self.resumed or {}).get("guard", {})
        self.best_eval: float | None = state.get("best_eval")
        self.best_step: int | None = state.get("best_step")
        self.bad_evals: int = state.get("bad_evals", 0)
        self.nan_streak = 0
        self.last_good_step = self.resumed["step"] if self.resumed else 0
        self.eval_at: tuple[int, float] | None = None
        self.stop_reason: str | None = None
        self.signals = 0
        self.trainer: Any = None
        self._batches: list[list[dict[str, Any]]] = []
        self._step_batches: list[list[dict[str, Any]]] = []
        self._tokens_at_step = 0
        self._stopping = False
        self._previous_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    # ------------------------------------------------------------------ setup
    def attach(self, trainer: Any) -> None:
        """Record the micro-batches of each step (for the NaN diagnosis): the training dataloader gets a
        collator that keeps the rows it batches; evaluation keeps the plain one."""
        self.trainer = trainer
        plain = trainer.get_train_dataloader

        def recording(features: list[dict[str, Any]]) -> Any:
            self._batches.append(features)
            return collator(features)

        def get_train_dataloader() -> Any:
            nonlocal collator
            collator = trainer.data_collator
            trainer.data_collator = recording
            try:
                return plain()
            finally:
                trainer.data_collator = collator

        collator = trainer.data_collator
        trainer.get_train_dataloader = get_train_dataloader

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        self.signals += 1
        if self.signals > 1:  # the second one: stop now; the last complete checkpoint stays as it is
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt(name)
        self.stop_reason = f"{name} received"
        print(f"{name}: finishing the current step, then saving a checkpoint and stopping "
              f"(send it again to stop at once)", flush=True)

    def _restore_signals(self) -> None:
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)

    def _fault(self, kind: str, step: int) -> bool:
        if not self.faults.take(kind, step):
            return False
        self.events.write("fault", f"injected fault {kind}@{step} (FTC_INJECT)", kind=kind, step=step)
        return True

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        if self.stop_reason:  # a signal while the model and data loaded: nothing new to save
            raise KeyboardInterrupt(self.stop_reason)
        ckpt.staging_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
        want = float(self.overrides.get("lr_scale", 1.0))
        have = float((self.resumed or {}).get("lr_scale", 1.0))  # a resumed scheduler already carries its scale
        if want != have and optimizer is not None:
            factor = want / have
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
            if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
                lr_scheduler.base_lrs = [lr * factor for lr in lr_scheduler.base_lrs]
                lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
            print(f"learning rate scaled by {want:g} of the planned one (after a NaN rollback)", flush=True)
        if self.resumed:
            self.events.write("resume", f"resumed from {self.resume} at step {state.global_step} of "
                              f"{state.max_steps}", step=state.global_step, path=self.resume)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step + 1
        if self.trainer is not None:
            n = getattr(self.trainer, "current_gradient_accumulation_steps", 1)
            self._step_batches, self._batches = self._batches[:n], self._batches[n:]
        self._tokens_at_step = state.num_input_tokens_seen or 0
        if self._fault("oom", step):
            raise torch.OutOfMemoryError(f"CUDA out of memory at step {step} (injected by FTC_INJECT)")
        if self._fault("crash", step):
            os.kill(os.getpid(), signal.SIGKILL)
        for kind in ("sigterm", "sigint"):
            if self._fault(kind, step):
                os.kill(os.getpid(), getattr(signal, kind.upper()))

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        step = state.global_step + 1
        params = [p for p in model.parameters() if p.grad is not None] if model is not None else []
        if self._fault("nan", step) and params:
            params[0].grad.fill_(float("nan"))
        if not params:
            return
        finite = bool(torch.stack([torch.isfinite(p.grad).all() for p in params]).all())
        if finite:
            self.nan_streak = 0
            self.last_good_step = step
            return
        for p in params:  # AdamW leaves parameters without a gradient untouched: the step is skipped
            p.grad = None
        self.nan_streak += 1
        rollbacks = int(self.overrides.get("rollbacks", 0))
        # fp16's loss scaler overflows on purpose while it calibrates (and skips those steps itself): only
        # a streak longer than its halvings from 2**16 down to 1 is a real NaN
        grace = FP16_OVERFLOWS if getattr(args, "fp16", False) else 0
        if (self.on_nan == "stop" and self.nan_streak > grace) or self.nan_streak >= self.nan_patience + grace:
            rollback = self.on_nan == "rollback" and rollbacks < MAX_ROLLBACKS
            what = (f"rolling back to the last good checkpoint (step {self.last_good_step} or before) with half the "
                    f"learning rate" if rollback else "stopping")
            message = (f"step {step}: NaN/inf gradients"
                       + (f" in {self.nan_streak} steps in a row" if self.nan_streak > 1 else "")
                       + f" (on_nan = {self.on_nan!r}" + (f", {rollbacks} rollback(s) done" if rollbacks else "")
                       + f"); {what}. " + self.diagnose(step))
            raise NonFiniteSteps(message, rollback=rollback, last_good_step=self.last_good_step)
        self.events.write("nan", f"step {step}: NaN/inf gradients; step skipped ({self.nan_streak} in a row, "
                          f"limit {self.nan_patience})", step=step, streak=self.nan_streak)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        actions = control_files.take(self.run_dir)
        if "checkpoint" in actions:
            control.should_save = True
            self.events.write("control", f"checkpoint requested at step {step}", step=step)
        if "stop" in actions and self.stop_reason is None:
            self.stop_reason = f"stop requested ({control_files.control_dir(self.run_dir) / 'stop'})"
        if self.stop_reason and not self._stopping:
            self._stopping = True
            control.should_save = control.should_training_stop = True
            self.events.write("status", f"{self.stop_reason}: saving a checkpoint at step {step} and stopping",
                              state="stopping", step=step)
        if control.should_save:
            self._check_disk(step, control)

    def _check_disk(self, step: int, control: Any) -> None:
        last = ckpt.latest(self.run_dir)
        if last is not None:
            needed = ckpt.folder_bytes(last.path)
        else:  # weights + two AdamW moments of what trains, in fp32
            needed = 3 * 4 * sum(p.numel() for p in self.trainer.model.parameters() if p.requires_grad) \
                if self.trainer is not None else 0
        needed = int(needed * DISK_MARGIN) + (64 << 20)
        free = 0 if self._fault("diskfull", step) else shutil.disk_usage(self.run_dir).free
        if free >= needed:
            return
        control.should_save = False
        control.should_training_stop = True
        kept = f"the last checkpoint (step {last.step}) is intact" if last else "no checkpoint was saved yet"
        self.stop_reason = (f"disk full: {free / 2**30:.2f} GiB free in {self.run_dir}, a checkpoint needs about "
                            f"{needed / 2**30:.2f} GiB; checkpoint {step} was not written and {kept}; free some space")
        self.events.write("disk_full", self.stop_reason, step=step, free_bytes=free, needed_bytes=needed)

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

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step
        staged = Path(args.output_dir) / f"{ckpt.PREFIX}{step}"
        if self._fault("enospc", step):
            raise OSError(errno.ENOSPC, f"No space left on device (injected while writing {staged})")
        if self._fault("savecrash", step):
            os.kill(os.getpid(), signal.SIGKILL)
        manifest = {
            "format": 1,
            "step": step,
            "epoch": state.epoch,
            "max_steps": state.max_steps,
            "samples_seen": step * args.per_device_train_batch_size * args.gradient_accumulation_steps
            * max(1, args.world_size),
            "tokens_seen": state.num_input_tokens_seen,
            "eval_loss": self.eval_at[1] if self.eval_at and self.eval_at[0] == step else None,
            "seed": args.seed,
            "micro_batch_size": args.per_device_train_batch_size,
            "grad_accum": args.gradient_accumulation_steps,
            "lr_scale": float(self.overrides.get("lr_scale", 1.0)),
            "data_sha256": self.data_sha256,
            "script_sha256": self.script_sha256,
            "versions": _versions(),
            "config": self.config,
            "guard": {"best_eval": self.best_eval, "best_step": self.best_step, "bad_evals": self.bad_evals},
            "time": round(time.time(), 3),
        }
        path = ckpt.publish(staged, self.run_dir, manifest)
        removed = ckpt.rotate(self.run_dir, self.keep)
        self.events.write("checkpoint", step=step, path=str(path), eval_loss=manifest["eval_loss"],
                          removed=[p.name for p in removed])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.stop_reason is None:
            self._restore_signals()  # from here on Ctrl-C interrupts the final save as usual

    # ------------------------------------------------------------------ NaN diagnosis
    def diagnose(self, step: int) -> str:
        """Which rows the failing step trained on, and which of them alone give a non-finite loss."""
        batches = self._step_batches
        if self.trainer is None or not batches:
            return "The rows of the step are unknown."
        features = [f for batch in batches for f in batch]
        dataset = self.trainer.train_dataset
        where: dict[tuple[int, ...], int] = {}
        try:
            for index, ids in enumerate(dataset["input_ids"]):
                where.setdefault(tuple(ids), index)
        except (KeyError, TypeError):
            pass
        rows = [where.get(tuple(f.get("input_ids", ())), -1) for f in features]
        # the Trainer counts the step's non-padding tokens: they must be the recorded rows' tokens
        seen = (self.trainer.state.num_input_tokens_seen or 0) - self._tokens_at_step
        exact = seen == sum(len(f.get("input_ids", ())) for f in features)
        bad = []
        model = self.trainer.model
        collator = self.trainer.data_collator
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for row, feature in zip(rows, features):
                    batch = collator([feature])
                    batch = {k: v.to(model.device) for k, v in batch.items() if hasattr(v, "to")}
                    loss = model(**batch).loss
                    if loss is not None and not torch.isfinite(loss):
                        bad.append(row)
        except Exception as exc:  # noqa: BLE001 - a diagnosis must not hide the original fault
            return f"The step trained on rows {_rows(rows)} of the training split (no per-row check: {exc})."
        finally:
            if was_training:
                model.train()
        text = (f"The step trained on rows {_rows(rows)} of the training split (indices after the validation split"
                + ("" if exact else "; the rows could not be matched to the step exactly, so some may be a "
                   "neighbouring step's") + "). ")
        if bad:
            return text + f"Alone, rows {_rows(bad)} give a non-finite loss: look at those examples."
        return (text + "None of them gives a non-finite loss alone, so the weights or optimizer diverged: lower "
                "train.learning_rate, raise train.warmup or lower train.max_grad_norm.")

    # ------------------------------------------------------------------ endings
    def __enter__(self) -> RunGuard:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        ckpt.clean_partial(self.run_dir)  # after success too: TRL leaves its model card (README.md) there
        if error is None:
            return False
        state = getattr(self.trainer, "state", None)
        step = getattr(state, "global_step", 0)
        last = ckpt.latest(self.run_dir)
        kept = f"the last checkpoint is step {last.step}" if last else "no checkpoint was saved"
        if _is_oom(error):
            self.events.write("oom", f"out of memory at step {step + 1} with micro-batch "
                              f"{self.trainer.args.per_device_train_batch_size}: {str(error).splitlines()[0]}; "
                              f"{kept}", step=step + 1,
                              micro_batch_size=self.trainer.args.per_device_train_batch_size)
            raise SystemExit(ckpt.EXIT_OOM)
        if isinstance(error, NonFiniteSteps):
            if error.rollback:
                self.events.write("nan", str(error), step=step + 1, rollback=True, last_good_step=error.last_good_step)
                raise SystemExit(ckpt.EXIT_ROLLBACK)
            self.events.write("status", str(error), state="failed", step=step, reason="nan")
            print(str(error), flush=True)
            raise SystemExit(1)
        if ckpt.is_disk_full(error):
            message = (f"disk full while writing checkpoint {step} ({error}); it was discarded and {kept}; "
                       f"free some space, then resume")
            self.events.write("disk_full", message, step=step)
            self.events.write("status", message, state="stopped", step=step, reason="disk_full",
                              checkpoint=str(last.path) if last else None)
            print(message, flush=True)
            raise SystemExit(ckpt.EXIT_STOPPED)
        if isinstance(error, KeyboardInterrupt):
            message = (f"stopped at once during step {step + 1}; {kept}; steps after it are lost" if self.signals > 1
                       else f"stopped before training began ({self.stop_reason}); {kept}")
            self.events.write("status", message, state="stopped", step=step, reason="interrupted",
                              checkpoint=str(last.path) if last else None)
            print(message, flush=True)
            raise SystemExit(130)
        return False

    def exit_if_stopped(self) -> None:
        """After training: if it ended on a stop request or a full disk, say how to resume and exit."""
        if self.stop_reason is None:
            return
        last = ckpt.latest(self.run_dir)
        step = self.trainer.state.global_step if self.trainer is not None else 0
        if last is not None:
            message = (f"stopped at step {step} ({self.stop_reason}); checkpoint {last.path} holds step {last.step}. "
                       f"Resume: ftc run SPEC --run-dir {self.run_dir} (or python {sys.argv[0]} {self.run_dir} "
                       f"--resume last)")
        else:
            message = f"stopped at step {step} ({self.stop_reason}); no checkpoint was saved, so a rerun starts over"
        self.events.write("status", message, state="stopped", step=step, reason=self.stop_reason,
                          checkpoint=str(last.path) if last else None)
        print(message, flush=True)
        raise SystemExit(ckpt.EXIT_STOPPED)


def _rows(rows: list[int]) -> str:
    known = sorted({r for r in rows if r >= 0})
    text = ", ".join(map(str, known[:20])) + (" ..." if len(known) > 20 else "")
    unknown = sum(r < 0 for r in rows)
    return text + (f" (and {unknown} not found)" if unknown else "") if known else f"{len(rows)} unknown rows"
