"""Fixture runs for the monitor's tests: events.jsonl files shaped like the ones train.py, ftc.runtime.guard
and `ftc run` write (see ftc.core.events), for a healthy run, a run with an out-of-memory retry, NaN
skips and a NaN rollback (each resumed from a checkpoint, re-doing steps), a crashed run, and a long run.
`python tests/tui_fixtures.py` rewrites tests/fixtures/runs/; the long run is made at test time
(`write_long_run`)."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RUNS = HERE / "fixtures" / "runs"
PLAN = HERE / "golden" / "specs" / "demo" / "plan.json"
T0 = 1_790_000_000.0


def _loss(step: int) -> float:
    return round(2.2 * math.exp(-step / 18) + 0.35 + 0.04 * math.sin(step * 1.7), 4)


def _lr(step: int, total: int) -> float:
    warm = max(1, round(0.05 * total))
    if step < warm:
        return 2e-3 * step / warm
    return 2e-3 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


FOLDER = "runs/demo/fixture"
DIAGNOSIS = ("The step trained on rows 12, 41, 77, 97, 180, 233, 260, 301 of the training split (indices after the "
             "validation split). None of them gives a non-finite loss alone, so the weights or optimizer diverged: "
             "lower train.learning_rate, raise train.warmup or lower train.max_grad_norm.")


class _Log:
    """Builds events as ftc.core.events.EventLog writes them (type, time, message, then the fields), with the
    field sets of train.py, ftc.runtime.guard and `ftc run` (copied from a tiny-model run with FTC_INJECT)."""

    def __init__(self, total: int, *, every: int = 2, eval_every: int = 16, keep: int = 2) -> None:
        self.events: list[dict[str, Any]] = []
        self.t = T0
        self.total, self.every, self.eval_every, self.keep = total, every, eval_every, keep
        self.kept: list[tuple[int, float | None]] = []  # the checkpoints on disk: (step, validation loss)
        self.evals: dict[int, float] = {}
        self.lr_scale, self.speed = 1.0, 1.0

    def write(self, type: str, message: str | None = None, *, after: float = 0.0, **fields: Any) -> dict[str, Any]:
        self.t += after
        event: dict[str, Any] = {"type": type, "time": round(self.t, 3)}
        if message is not None:
            event["message"] = message
        event.update(fields)
        self.events.append(event)
        return event

    def launch(self, micro: int = 8, accum: int = 1, *, resume: int | None = None, after: float = 0.0) -> None:
        """What a start (or a restart by `ftc run`) writes before the first step."""
        if resume is None:
            self.write("status", f"launching {FOLDER}/train.py", state="starting", spec="specs/demo.toml", after=after)
            self.t += 9.0
        else:
            self.t += after + 8.0
        self.write("start", "training script started",
                   config={"BASE_MODEL": "smollm2-135m-instruct", "LORA_R": 8, "EPOCHS": 2.0,
                           "MICRO_BATCH_SIZE": micro, "GRAD_ACCUM": accum})
        for split, n in (("train", 324), ("validation", 36)):
            self.write("data", f"{split}: {n} examples, {n * 61:,} tokens, {n * 17:,} trained (28 %), 0 truncated, "
                       "longest 118 tokens", after=0.75, split=split, examples=n, tokens=n * 61,
                       trained_tokens=n * 17, trained_share=0.2787, truncated=0, truncated_rows=[],
                       length={"p50": 58, "p90": 84, "p95": 97, "p99": 112, "max": 118})
        self.write("params", "trainable parameters: 4,884,480 of 139,399,488 (3.504 %)", after=1.5,
                   trainable=4884480, total=139399488)
        at = resume or 0
        self.write("status", f"training for {self.total} steps", after=0.5, state="running", step=at,
                   total_steps=self.total)
        if resume is not None:
            path = f"{FOLDER}/checkpoints/checkpoint-{resume}"
            self.write("resume", f"resumed from {path} at step {resume} of {self.total}", step=resume, path=path)

    def step(self, step: int, *, seconds: float = 3.0, loss: float | None = None) -> None:
        """One optimizer step: its step event every `every` steps, then the evaluation and checkpoint."""
        self.t += seconds / self.speed
        if step % self.every == 0:
            self.write("step", step=step, total_steps=self.total, epoch=round(2 * step / self.total, 4),
                       loss=_loss(step) if loss is None else loss, learning_rate=_lr(step, self.total) * self.lr_scale,
                       grad_norm=1.1, tokens_per_s=round((140 + 12 * math.sin(step / 5)) * self.speed, 1),
                       tokens_seen=step * 520)
        if step % self.eval_every == 0:
            self.evals[step] = round(_loss(step) + 0.08, 4)
            self.write("eval", after=2.0, step=step, loss=self.evals[step], epoch=round(2 * step / self.total, 4))
            self.checkpoint(step, after=0.5)

    def checkpoint(self, step: int, *, after: float = 0.0) -> None:
        """A published checkpoint, then the rotation of ftc.core.checkpoint: the last `keep` and the best."""
        self.kept.append((step, self.evals.get(step)))
        rated = [c for c in self.kept if c[1] is not None]
        best = min(rated, key=lambda c: c[1]) if rated else None
        removed = [c for c in self.kept if c not in self.kept[-self.keep:] and c != best]
        self.kept = [c for c in self.kept if c not in removed]
        self.write("checkpoint", after=after, step=step, path=f"{FOLDER}/checkpoints/checkpoint-{step}",
                   eval_loss=self.evals.get(step), removed=[f"checkpoint-{s}" for s, _ in removed])

    def discard_after(self, step: int) -> None:
        """`ftc run` deletes the checkpoints after a rollback's (no event of their own)."""
        self.kept = [c for c in self.kept if c[0] <= step]


def _run(total: int, last: int, *, seconds_per_step: float = 3.0, every: int = 2, eval_every: int = 16) -> _Log:
    log = _Log(total, every=every, eval_every=eval_every)
    log.launch()
    for step in range(1, last + 1):
        log.step(step, seconds=seconds_per_step)
    return log


def healthy() -> list[dict[str, Any]]:
    log = _run(82, 82)
    log.checkpoint(82, after=1.0)
    log.write("compare", "exact match on 20 held-out examples: before 0/20 (0 %), after 20/20 (100 %)", after=29.0,
              examples=20, exact_before=0, exact_after=20)
    log.write("status", f"finished: final training loss 0.4012; saved to {FOLDER}/final", after=1.0,
              state="completed", step=82, train_loss=0.4012, output=f"{FOLDER}/final")
    return log.events


def troubled() -> list[dict[str, Any]]:
    """Still running at step 50 of 82, after an out-of-memory retry (micro-batch 8 -> 4, resumed from checkpoint
    16: steps 17-20 done again), a skipped NaN step, and a NaN rollback (steps 35-36 skipped, 37 rolls back to
    checkpoint 32 with half the learning rate: steps 33-36 done again), as the runtime writes them."""
    log = _Log(82)
    log.launch()
    for step in range(1, 21):
        log.step(step)
    log.write("oom", "out of memory at step 21 with micro-batch 8: CUDA out of memory. Tried to allocate 1.50 GiB. "
              "GPU 0 has a total capacity of 23.55 GiB of which 1.21 GiB is free.; the last checkpoint is step 16",
              after=2.0, step=21, micro_batch_size=8)
    log.write("retry", "out of memory with micro-batch 8 x 1: retrying from checkpoint-16 (step 16) with micro-batch "
              "4 x 2 accumulation (the same effective batch of 8 per device)", after=1.5, reason="oom",
              micro_batch_size=4, grad_accum=2, lr_scale=1.0, resume=f"{FOLDER}/checkpoints/checkpoint-16")
    log.speed = 0.85  # smaller micro-batches: slower steps
    log.launch(4, 2, resume=16)
    for step in range(17, 37):
        if step == 27:
            log.write("nan", "step 27: NaN/inf gradients; step skipped (1 in a row, limit 3)", after=2.5, step=27,
                      streak=1)
        if step in (35, 36):
            log.write("nan", f"step {step}: NaN/inf gradients; step skipped ({step - 34} in a row, limit 3)",
                      after=2.5, step=step, streak=step - 34)
        log.step(step, loss=4.83 if step == 36 else None)
    log.write("nan", "step 37: NaN/inf gradients in 3 steps in a row (on_nan = 'rollback'); rolling back to the last "
              "good checkpoint (step 34 or before) with half the learning rate. " + DIAGNOSIS, after=3.0, step=37,
              rollback=True, last_good_step=34)
    log.discard_after(32)
    log.lr_scale = 0.5
    log.write("retry", "NaN/inf steps from step 35: rolling back to checkpoint-32 with the learning rate scaled to 0.5 "
              "of the plan", after=1.5, reason="nan", micro_batch_size=4, grad_accum=2, lr_scale=0.5,
              resume=f"{FOLDER}/checkpoints/checkpoint-32")
    log.launch(4, 2, resume=32)
    for step in range(33, 51):
        log.step(step)
    return log.events


def crashed() -> list[dict[str, Any]]:
    """Killed (SIGKILL, e.g. by the kernel's OOM killer) during step 24: `ftc run` writes the failure."""
    log = _run(82, 23)
    log.write("status", "training process exited with code -9", after=5.0, state="failed", exit_code=-9)
    return log.events


def write_run(folder: Path, events: list[dict[str, Any]], *, torn: str = "",
              changes: list[dict[str, Any]] | None = None) -> Path:
    """The run directory: events.jsonl (plus a `torn` last line) and the demo plan.json, with what `ftc run`
    changed at runtime (`changes`: its overrides history) applied as `ftc run` records them."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PLAN, folder / "plan.json")
    if changes:
        plan = json.loads(PLAN.read_text(encoding="utf-8"))
        last = [c for c in changes if "micro_batch_size" in c]
        if last:
            plan["settings"].update(micro_batch_size=last[-1]["micro_batch_size"], grad_accum=last[-1]["grad_accum"])
        plan["runtime_changes"] = changes
        (folder / "plan.json").write_text(json.dumps(plan, indent=2) + "\n", encoding="utf-8")
    with (folder / "events.jsonl").open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")
        handle.write(torn)
    return folder


def write_long_run(folder: Path, steps: int = 100_000) -> Path:
    """A 100,000-step run logged every step, still running (about 10 MB of events)."""
    return write_run(folder, _run(steps, steps, seconds_per_step=0.05, every=1, eval_every=5000).events)


CASES = {"healthy": healthy, "troubled": troubled, "crashed": crashed}
TROUBLED_CHANGES = [  # what `ftc run` records in the run's plan.json (runtime_changes) for the troubled run
    {"reason": "oom", "step": 21, "micro_batch_size": 4, "grad_accum": 2, "from": [8, 1]},
    {"reason": "nan", "step": 37, "lr_scale": 0.5, "resume_step": 32},
]

if __name__ == "__main__":
    for name, make in CASES.items():
        torn = '{"type": "step", "time": 1790000090.0, "step": 24, "lo' if name == "crashed" else ""
        write_run(RUNS / name, make(), torn=torn, changes=TROUBLED_CHANGES if name == "troubled" else None)
    sys.exit(0)
