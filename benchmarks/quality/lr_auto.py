"""What `learning_rate = "auto"` picks on the quality tasks, against the rule's rate and the tuned 2e-3.

For each task it plans the defaults-only spec (the rule's rate, batch and micro-batch), runs the range test
exactly as `ftc compile` does (ftc.cli.lrfind.run_range_test: the emitted train.py with ftc.runtime.lrrange's
callback), and records the curve, the pick (ftc.compiler.lrrange.pick: a tenth of the rate the loss diverged
at) and the steepest descent beside it.
No training run follows: the quality of the picked rate is measured by run.py with the spec set to "auto".

    nice -n 19 .venv/bin/python benchmarks/quality/lr_auto.py dates topic [--budget 60]

`--budget` raises the sweep's time budget (seconds of training steps; ftc compile uses BUDGET_S) and `--steps N`
fixes the number of steps, for a loaded machine, so the curve has the steps an idle one would give in the
budget; both are recorded.
Appends one JSON line per task to benchmarks/results/lr_auto.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from ftc.cli.lrfind import run_range_test
from ftc.compiler.compile import compile_spec
from ftc.compiler.lrrange import BUDGET_S, Sweep, pick, steepest
from ftc.core.lrcurve import smoothed

HERE = Path(__file__).resolve().parent
TUNED = 2e-3


def measure(task: str, budget: float, steps: int | None) -> dict[str, object]:
    spec = HERE / "specs" / f"{task}.defaults.toml"
    plan = compile_spec(spec).plan
    planned = float(plan["learning_rate"])
    sweep = dataclasses.replace(Sweep.around(planned), budget_s=budget)
    if steps:  # the sweep spread over exactly this many steps (what the budget gives on an idle machine)
        sweep = dataclasses.replace(sweep, steps=steps, min_steps=steps)
    start = time.perf_counter()
    curve = run_range_test(str(spec), (), planned, int(plan["batch_size"]), int(plan["micro_batch_size"]), sweep,
                           timeout=budget + 240)
    wall = time.perf_counter() - start
    chosen = pick(curve, planned)
    lrs, losses = [p[0] for p in curve.points], [p[1] for p in curve.points]
    return {"task": task, "rule": planned, "tuned": TUNED, "auto": chosen.value, "why": chosen.why,
            "steepest": steepest(lrs, smoothed(losses)) if len(lrs) >= 3 else None,
            "curve": curve.points, "smoothed": smoothed(losses), "stopped": curve.stopped,
            "planned_steps": curve.planned_steps, "train_seconds": curve.seconds, "wall_seconds": round(wall, 1),
            "budget_s": budget, "steps_asked": steps, "batch": plan["batch_size"], "micro": plan["micro_batch_size"],
            "load": os.getloadavg()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--budget", type=float, default=BUDGET_S)
    parser.add_argument("--steps", type=int, help="spread the sweep over exactly N steps (default: as the budget allows)")
    args = parser.parse_args()
    out = HERE.parent / "results" / "lr_auto.jsonl"
    for task in args.tasks:
        record = measure(task, args.budget, args.steps)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"{task}: rule {record['rule']:g}, tuned {TUNED:g}, auto {record['auto']:g} "
              f"(steepest {record['steepest']}); {record['why']}", flush=True)


if __name__ == "__main__":
    main()
