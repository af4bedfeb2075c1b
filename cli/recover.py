"""What `ftc run` does when an attempt of the training script ends other than completed, decided from the
script's final status event alone (its `error` kind and `exit_code`, written by ftc.runtime.outcome; fields in
ftc.core.events): out of memory retries with half the micro-batch, NaN steps roll back with a lower learning
rate (both through overrides.json, which train.py applies to CONFIG), anything else becomes a RunError."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from rich.console import Console

from ftc.compiler.compile import CompileResult
from ftc.core import checkpoint as ckpt
from ftc.core.errors import RunError
from ftc.core.events import EventLog, read_events

# Error kinds of the script's final status event (ftc.runtime.outcome) whose message says what to fix.
USER_ERRORS = frozenset({"data", "bundled_model", "method", "run_dir", "nan", "eval_gate", "kernel"})


def recover(console: Console, result: CompileResult, target: Path, events: EventLog, final: dict[str, Any],
            code: int, tail: deque[str]) -> ckpt.Checkpoint | None:
    """The checkpoint to retry from after out of memory or a NaN rollback, else a RunError with the script's own
    message (or, for an unknown crash, the last lines of its log)."""
    error, recorded = final.get("error"), final.get("exit_code")
    if recorded == code == ckpt.EXIT_OOM and error == "oom":
        return _after_oom(console, result, target, events, final)
    if recorded == code == ckpt.EXIT_ROLLBACK and error == "nan":
        return _after_nan(console, result, target, events, final)
    log = target / "train.log"
    if final.get("state") not in ("failed", "exiting") or recorded != code:  # killed, or it died without a word
        events.write("status", f"training process exited with code {code}", state="failed", exit_code=code,
                     error="crash")
    elif error in USER_ERRORS:  # a problem the script named on purpose: its message says what to fix
        raise RunError(f"{final.get('message')}\n(training stopped with exit code {code}; full log: {log})")
    last = "\n".join(f"  | {line}" for line in tail)
    hint = resume_hint(result, target)
    raise RunError(f"training failed (exit code {code}); last lines of {log}:\n{last}" + (f"\n{hint}" if hint else ""))


# The final status of a process that asks `ftc run` for another attempt: (error kind, exit code).
RETRYABLE = {("oom", ckpt.EXIT_OOM), ("nan", ckpt.EXIT_ROLLBACK)}


def rank_logs(target: Path) -> dict[Path, int]:
    """The other ranks' event files (RUN_DIR/ranks/<rank>/events.jsonl) and how many events each holds now."""
    return {p: len(read_events(p)) for p in sorted(target.glob("ranks/*/events.jsonl"))}


def ranks_outcome(target: Path, before: dict[Path, int], final: dict[str, Any], code: int, *, distributed: bool
                  ) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """Under several processes torchrun exits 1 whichever rank failed (and ends the others, whose status then
    says stopped or crashed): the attempt's outcome is the status of the first process that asks for a retry
    (out of memory, a NaN rollback), rank 0's first, with its exit code; else rank 0's status and `code`.
    Also returns the events the other ranks wrote in the attempt (their injected faults)."""
    others = [e for p in sorted(target.glob("ranks/*/events.jsonl")) for e in read_events(p)[before.get(p, 0):]]
    if distributed and code != 0:
        for status in [final, *(e for e in others if e.get("type") == "status")]:
            if (status.get("error"), status.get("exit_code")) in RETRYABLE:
                return status, int(status["exit_code"]), others
    return final, code, others


def _micro_and_accum(result: CompileResult, target: Path) -> tuple[int, int]:
    overrides = ckpt.read_overrides(target)
    return (overrides.get("micro_batch_size", result.plan["micro_batch_size"]),
            overrides.get("grad_accum", result.plan["grad_accum"]))


def with_overrides(settings: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The planned settings as the script trains them after ftc run's changes (it applies overrides.json to
    CONFIG the same way): the micro-batch split, and the learning rate times lr_scale."""
    changed = {**settings, **{k: overrides[k] for k in ("micro_batch_size", "grad_accum") if k in overrides}}
    if isinstance(changed.get("learning_rate"), (int, float)):
        changed["learning_rate"] = changed["learning_rate"] * float(overrides.get("lr_scale", 1.0))
    return changed


def write_plan(result: CompileResult, target: Path) -> None:
    """The run's plan.json: the compiled plan with what ftc run changed (overrides.json) applied."""
    plan = json.loads((result.out_dir / "plan.json").read_text(encoding="utf-8"))
    if overrides := ckpt.read_overrides(target):
        plan["settings"] = with_overrides(plan["settings"], overrides)
        plan["runtime_changes"] = overrides.get("history", [])
    ckpt.write_json_atomic(target / "plan.json", plan)


def _record(result: CompileResult, target: Path, change: dict[str, Any], **overrides: Any) -> None:
    """Write what ftc run changed into overrides.json (which the script reads) and the run's plan.json."""
    current = ckpt.read_overrides(target)
    current.update(overrides)
    current["history"] = [*current.get("history", []), change]
    ckpt.write_overrides(target, current)
    write_plan(result, target)


def _after_oom(console: Console, result: CompileResult, target: Path, events: EventLog,
               oom: dict[str, Any]) -> ckpt.Checkpoint | None:
    """Half the micro-batch, double the accumulation (same effective batch); the checkpoint to restart from.
    `oom` is the script's final status event (error "oom", failed_step)."""
    micro, accum = _micro_and_accum(result, target)
    per_device = micro * accum
    last = ckpt.latest(target)
    if micro == 1:
        events.write("status", f"out of memory at step {oom.get('failed_step')} with a micro-batch of 1",
                     state="failed", error="oom", exit_code=1)
        raise RunError(f"out of memory at step {oom.get('failed_step')} with a micro-batch of 1: it cannot go "
                       "lower. Lower the memory a step needs: train.gradient_checkpointing = true, a shorter "
                       "data.max_length, method kind = \"qlora\", or a device with more memory"
                       + (f"; the checkpoint at step {last.step} is kept and resumes with ftc run" if last else ""))
    smaller = max(d for d in range(1, micro // 2 + 1) if per_device % d == 0)
    change = {"reason": "oom", "step": oom.get("failed_step"), "micro_batch_size": smaller,
              "grad_accum": per_device // smaller, "from": [micro, accum]}
    _record(result, target, change, micro_batch_size=smaller, grad_accum=per_device // smaller)
    where = f"{last.path.name} (step {last.step})" if last else "the start (no checkpoint yet)"
    message = (f"out of memory with micro-batch {micro} x {accum}: retrying from {where} with micro-batch {smaller} "
               f"x {per_device // smaller} accumulation (the same effective batch of {per_device} per device)")
    console.print(message)
    events.write("retry", message, reason="oom", micro_batch_size=smaller, grad_accum=per_device // smaller,
                 lr_scale=ckpt.read_overrides(target).get("lr_scale", 1.0), resume=str(last.path) if last else None)
    return last


def _after_nan(console: Console, result: CompileResult, target: Path, events: EventLog,
               event: dict[str, Any]) -> ckpt.Checkpoint | None:
    """Roll back to the last checkpoint before the NaN steps began, with half the learning rate (overrides.json's
    lr_scale, which the script multiplies into CONFIG's LEARNING_RATE). `event`: the final status (error "nan")."""
    good_step = int(event.get("last_good_step", 0))
    good = next((c for c in reversed(ckpt.complete(target)) if c.step <= good_step), None)
    dropped = ckpt.discard_after(target, good.step if good else 0)
    overrides = ckpt.read_overrides(target)
    scale = float(overrides.get("lr_scale", 1.0)) * 0.5
    micro, accum = _micro_and_accum(result, target)
    change = {"reason": "nan", "step": event.get("failed_step"), "lr_scale": scale, "resume_step": good.step if good else 0}
    _record(result, target, change, micro_batch_size=micro, grad_accum=accum, lr_scale=scale,
            rollbacks=int(overrides.get("rollbacks", 0)) + 1)
    where = f"{good.path.name}" if good else "the start (no checkpoint before the NaN steps)"
    rate = result.plan["learning_rate"] * scale
    message = (f"NaN/inf steps from step {good_step + 1}: rolling back to {where} with the learning rate scaled "
               f"to {scale:g} of the plan ({rate:g})" + (f"; dropped {', '.join(p.name for p in dropped)}" if dropped else ""))
    console.print(message)
    events.write("retry", message, reason="nan", micro_batch_size=micro, grad_accum=accum, lr_scale=scale,
                 learning_rate=rate, resume=str(good.path) if good else None)
    return good


def resume_hint(result: CompileResult, target: Path) -> str | None:
    last = ckpt.latest(target)
    if last is None:
        return None
    return (f"the checkpoint at step {last.step} is intact; resume with: ftc run {result.source.display} "
            f"--run-dir {target}")
