"""The learning-rate range test's run, for `learning_rate = "auto"` (the rule and the pick: ftc.compiler.lrrange).

Like `ftc plan --probe`, it runs the emitted train.py itself, compiled with the planned rate as a constant
schedule, the plan's batch and micro-batch, `max_steps` = the sweep's steps, a step event per step and no
checkpoint, evaluation or generation inside, in a temporary folder; FTC_LR_RANGE makes the script add
ftc.runtime.lrrange's callback, which sets each step's rate and stops on divergence or the time budget.
The compiler hands it the spec and its overrides and gets the curve back (compile_spec's `range_test`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ftc.compiler.lrrange import TIMEOUT_S, Curve, RangeTestError, Sweep
from ftc.compiler.overrides import REMOVE, Override


def short_run(steps: int, why: str) -> tuple[Override, ...]:
    """Overrides that make the spec's script a few timed steps and nothing else (no checkpoint, evaluation or
    generation inside), dropping what only makes sense beside those (epochs beside max_steps; the answer length,
    the generated-answer metrics and their gate beside compare = 0); used by the range test and the probe."""
    never = steps * 1000
    values = {("train", "max_steps"): steps, ("train", "epochs"): REMOVE, ("train", "logging_steps"): 1,
              ("train", "save_steps"): never, ("eval", "steps"): never, ("eval", "compare"): 0,
              ("eval", "metrics"): [], ("eval", "fail_if_worse"): REMOVE, ("eval", "max_new_tokens"): REMOVE}
    return tuple(Override(key, value, f"({why}) {'.'.join(key)}") for key, value in values.items())


def _flags(planned: float, batch: int, micro: int, steps: int) -> tuple[Override, ...]:
    values = {("train", "learning_rate"): planned, ("train", "batch_size"): batch,
              ("train", "micro_batch_size"): micro, ("train", "scheduler"): "constant", ("train", "warmup"): 0.0,
              ("train", "early_stopping_patience"): REMOVE}
    return short_run(steps, "range test") + tuple(Override(key, value, f"(range test) {'.'.join(key)}")
                                                  for key, value in values.items())


def _events(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [e for e in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if isinstance(e, dict)]


def run_range_test(spec: str | Path, overrides: tuple[Override, ...], planned: float, batch: int, micro: int,
                   sweep: Sweep, timeout: float = TIMEOUT_S) -> Curve:
    """Run the sweep through the spec's own script, stopped after `timeout` seconds (start-up included);
    RangeTestError (with the end of the log) when it fails."""
    from ftc.compiler.compile import compile_spec

    print(f"learning_rate = \"auto\": a range test of {sweep.low:.2g} to {sweep.high:.2g} over {sweep.steps} steps at "
          f"most ({sweep.budget_s:.0f} s of steps), running the compiled script", file=sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory(prefix="ftc-lrfind-") as tmp:
        result = compile_spec(spec, Path(tmp) / "compiled", (*overrides, *_flags(planned, batch, micro, sweep.steps)))
        result.write()
        env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false", FTC_LR_RANGE=json.dumps(
            dataclasses.asdict(sweep)), HF_DATASETS_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
        env.pop("FTC_INJECT", None)
        log = Path(tmp) / "lrfind.log"
        with log.open("w", encoding="utf-8") as handle:
            try:
                code: int | None = subprocess.run([sys.executable, str(result.out_dir / "train.py"), str(Path(tmp) / "run")],
                                                  stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=timeout,
                                                  check=False).returncode
            except subprocess.TimeoutExpired:
                code = None
        events = _events(Path(tmp) / "run" / "events.jsonl")
        tail = " | ".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-3:])
    steps = [e for e in events if e.get("type") == "step"]
    end = next((e for e in events if e.get("type") == "lr_range"), None)
    if end is None:
        why = f"did not end within {timeout:.0f} s" if code is None else f"failed (exit code {code})"
        raise RangeTestError(f"the range test run {why} after {len(steps)} step(s); set a float learning_rate, or "
                             f"fix what the end of its log says: {tail}")
    points = [(float(e["learning_rate"]), float(e["loss"])) for e in steps]  # type: ignore[arg-type]
    if end.get("nonfinite") and points:  # the Trainer logged the blown-up step's loss as the mean before it
        points[-1] = (points[-1][0], math.inf)
    return Curve(tuple(points), str(end["stopped"]), float(end["seconds"]), int(end["planned_steps"]))  # type: ignore[arg-type]
