"""The callback that keeps a run recoverable: each checkpoint the Trainer writes into RUN_DIR/checkpoints.partial/
gets a manifest (versions, config, data fingerprint, seed, position, validation loss), is flushed and renamed
into RUN_DIR/checkpoints/, and only the last K and the best by validation loss are kept (ftc.core.checkpoint).
Before a save it checks the free space, so a full disk stops the run with the last checkpoint intact."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftc.core import checkpoint as ckpt
from ftc.runtime import ranks
from ftc.runtime.outcome import GuardError, StopRun
from ftc.runtime.stopping import EarlyStop
from ftc.runtime.trainer import PrintingLog

DISK_MARGIN = 1.2
"""Free space needed before a checkpoint, as a multiple of the previous checkpoint's size."""


def resume_point(run_dir: str | os.PathLike[str], requested: str | None) -> str | None:
    """The checkpoint folder to continue from: `requested` is a path, "last" or None (a fresh start,
    refused when the run directory already has checkpoints that it would mix with)."""
    if ranks.RANK == 0:  # the others would race it to the same folder
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


class Checkpoints(TrainerCallback):  # type: ignore[misc]
    """See the module docstring. `early_stop`'s state is saved in each manifest, so that a resume keeps it."""

    def __init__(self, events: PrintingLog, run_dir: str | Path, config: dict[str, Any], *, resume: str | None,
                 keep: int, early_stop: EarlyStop) -> None:
        self.events, self.run_dir = events, Path(run_dir)
        self.config, self.resume, self.keep, self.early_stop = config, resume, keep, early_stop
        self.resumed = ckpt.complete_manifest(resume) if resume else None
        self.data_sha256 = ckpt.data_fingerprint(config.get("DATA_FILES"), config.get("DATA_SOURCE"),
                                                 config.get("VALIDATION"))
        self.script_sha256 = ckpt.file_sha256(sys.argv[0]) if os.path.isfile(sys.argv[0]) else None
        self.refused: str | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        ckpt.staging_dir(self.run_dir).mkdir(parents=True, exist_ok=True)
        if not self.resumed:
            return
        trained_at = self.resumed.get("config", {}).get("LEARNING_RATE")
        if trained_at and self.config.get("LEARNING_RATE") not in (None, trained_at) and optimizer is not None:
            follow_learning_rate(optimizer, lr_scheduler, self.config["LEARNING_RATE"] / trained_at)
        self.events.write("resume", f"resumed from {self.resume} at step {state.global_step} of {state.max_steps}",
                          step=state.global_step, path=self.resume)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if control.should_save:
            self.check_disk(state.global_step, control, model, shutil.disk_usage(self.run_dir).free)

    def check_disk(self, step: int, control: Any, model: Any, free: int) -> None:
        """Skip the save and stop training when `free` bytes cannot hold another checkpoint."""
        last = ckpt.latest(self.run_dir)
        if last is not None:
            needed = ckpt.folder_bytes(last.path)
        else:  # weights + two AdamW moments of what trains, in fp32 (a ZeRO-3 parameter: its whole ds_numel)
            trained = [p for p in model.parameters() if p.requires_grad] if model is not None else []
            needed = 3 * 4 * sum(getattr(p, "ds_numel", None) or p.numel() for p in trained)
        needed = int(needed * DISK_MARGIN) + (64 << 20)
        if free >= needed:
            return
        control.should_save = False
        control.should_training_stop = True
        kept = f"the last checkpoint (step {last.step}) is intact" if last else "no checkpoint was saved yet"
        self.refused = (f"disk full: {free / 2**30:.2f} GiB free in {self.run_dir}, a checkpoint needs about "
                        f"{needed / 2**30:.2f} GiB; checkpoint {step} was not written and {kept}; free some space")
        self.events.write("disk_full", self.refused, step=step, free_bytes=free, needed_bytes=needed)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        ranks.barrier()  # every process has written its part of the checkpoint (its shards, its RNG state)
        if ranks.RANK != 0:  # rank 0 alone writes the manifest and publishes the folder
            return
        step = state.global_step
        staged = Path(args.output_dir) / f"{ckpt.PREFIX}{step}"
        at = self.early_stop.eval_at
        manifest = {
            "format": 1, "step": step, "epoch": state.epoch, "max_steps": state.max_steps,
            "samples_seen": step * args.per_device_train_batch_size * args.gradient_accumulation_steps
            * max(1, args.world_size),
            "tokens_seen": state.num_input_tokens_seen, "eval_loss": at[1] if at and at[0] == step else None,
            "seed": args.seed, "micro_batch_size": args.per_device_train_batch_size,
            "grad_accum": args.gradient_accumulation_steps, "data_sha256": self.data_sha256,
            "script_sha256": self.script_sha256, "versions": _versions(), "config": self.config,
            "guard": self.early_stop.state(), "time": round(time.time(), 3),
        }
        path = ckpt.publish(staged, self.run_dir, manifest)
        removed = ckpt.rotate(self.run_dir, self.keep)
        self.events.write("checkpoint", step=step, path=str(path), eval_loss=manifest["eval_loss"],
                          removed=[p.name for p in removed])

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.refused is not None:
            raise StopRun(self.refused, kind="disk_full")


def follow_learning_rate(optimizer: Any, lr_scheduler: Any, factor: float) -> None:
    """A resumed optimizer and scheduler carry the learning rate their checkpoint trained at; after a NaN
    rollback CONFIG's LEARNING_RATE is lower: scale the rates they restored (and the scheduler's base rates,
    from which each next step's rate is computed) so that the run trains at what CONFIG shows."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
        lr_scheduler.base_lrs = [lr * factor for lr in lr_scheduler.base_lrs]
    print(f"learning rate {factor:g} x the checkpoint's: LEARNING_RATE in CONFIG (lowered after a NaN rollback)",
          flush=True)
