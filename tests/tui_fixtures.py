"""Fixture runs for the monitor's tests: events.jsonl files shaped like the ones train.py and `ftc run`
write, for a healthy run, a run with an out-of-memory retry / non-finite-loss skips / a resume, a
crashed run, and a long run. `python tests/tui_fixtures.py` rewrites tests/fixtures/runs/; the long
run is made at test time (`write_long_run`)."""

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


def _run(total: int, last: int, *, seconds_per_step: float = 3.0, every: int = 2, eval_every: int = 16,
         trouble: bool = False) -> list[dict[str, Any]]:
    t = T0
    events: list[dict[str, Any]] = [
        {"type": "status", "time": t, "message": "launching runs/demo/fixture/train.py", "state": "starting",
         "spec": "specs/demo.toml"},
        {"type": "start", "time": t + 9.0, "message": "training script started",
         "config": {"BASE_MODEL": "smollm2-135m-instruct", "LORA_R": 8, "EPOCHS": 2.0}},
        {"type": "data", "time": t + 10.5, "message": "train: 324 examples, validation: 36 examples",
         "train": 324, "validation": 36},
        {"type": "params", "time": t + 12.0, "message": "trainable parameters: 4,884,480 of 139,399,488 (3.504 %)",
         "trainable": 4884480, "total": 139399488},
        {"type": "status", "time": t + 12.5, "state": "running", "step": 0, "total_steps": total,
         "message": f"training for {total} steps"},
    ]
    t += 12.5
    for step in range(1, last + 1):
        t += seconds_per_step
        if trouble and step == 12:
            events.append({"type": "warning", "time": round(t, 3), "step": 12,
                           "message": "out of memory at step 12: retrying with micro-batch 4 x accumulation 4"})
            t += 4.0
        if trouble and step in (30, 34):
            events.append({"type": "warning", "time": round(t, 3), "step": step,
                           "message": f"non-finite loss at step {step}: step skipped"})
        if trouble and step == 20:
            events.append({"type": "resume", "time": round(t, 3), "step": 16,
                           "message": "resumed from checkpoints/checkpoint-16 after a restart"})
        if step % every == 0:
            events.append({"type": "step", "time": round(t, 3), "step": step, "total_steps": total,
                           "epoch": round(2 * step / total, 4), "loss": _loss(step),
                           "learning_rate": _lr(step, total), "grad_norm": 1.1,
                           "tokens_per_s": round(140 + 12 * math.sin(step / 5), 1), "tokens_seen": step * 520})
        if step % eval_every == 0:
            t += 2.0
            events.append({"type": "eval", "time": round(t, 3), "step": step, "loss": round(_loss(step) + 0.08, 4),
                           "epoch": round(2 * step / total, 4)})
            events.append({"type": "checkpoint", "time": round(t + 0.5, 3), "step": step,
                           "path": f"runs/demo/fixture/checkpoints/checkpoint-{step}"})
    return events


def healthy() -> list[dict[str, Any]]:
    events = _run(82, 82)
    t = events[-1]["time"]
    events.append({"type": "checkpoint", "time": t + 1, "step": 82, "path": "runs/demo/fixture/checkpoints/checkpoint-82"})
    events.append({"type": "compare", "time": t + 30,
                   "message": "exact match on 20 held-out examples: before 0/20 (0 %), after 20/20 (100 %)",
                   "examples": 20, "exact_before": 0, "exact_after": 20})
    events.append({"type": "status", "time": t + 31, "state": "completed", "step": 82,
                   "message": "finished: final training loss 0.4012; saved to runs/demo/fixture/final",
                   "output": "runs/demo/fixture/final"})
    return events


def troubled() -> list[dict[str, Any]]:
    """Still running at step 40 of 82, after an OOM retry, a resume and two skipped steps."""
    return _run(82, 40, trouble=True)


def crashed() -> list[dict[str, Any]]:
    events = _run(82, 23)
    t = events[-1]["time"]
    events.append({"type": "status", "time": t + 5, "state": "failed", "exit_code": -9,
                   "message": "training process exited with code -9"})
    return events


def write_run(folder: Path, events: list[dict[str, Any]], *, torn: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PLAN, folder / "plan.json")
    with (folder / "events.jsonl").open("w", encoding="utf-8") as handle:
        for event in events:
            handle.write(json.dumps(event) + "\n")
        handle.write(torn)
    return folder


def write_long_run(folder: Path, steps: int = 100_000) -> Path:
    """A 100,000-step run logged every step, still running (about 10 MB of events)."""
    return write_run(folder, _run(steps, steps, seconds_per_step=0.05, every=1, eval_every=5000))


CASES = {"healthy": healthy, "troubled": troubled, "crashed": crashed}

if __name__ == "__main__":
    for name, make in CASES.items():
        torn = '{"type": "step", "time": 1790000090.0, "step": 24, "lo' if name == "crashed" else ""
        write_run(RUNS / name, make(), torn=torn)
    sys.exit(0)
