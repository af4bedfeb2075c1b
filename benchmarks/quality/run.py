"""Run the quality benchmark: each task's hand-tuned spec and its defaults-only spec, alternated, on CPU.

For every task (make_tasks.py) it runs ``ftc run`` on specs/<task>.tuned.toml and specs/<task>.defaults.toml
(the order flips from task to task: tuned first, then defaults first, ...), then reads each run's
eval.json (held-out exact match after training, on the task's 24 held-out rows) and events.jsonl
(training time: from the "running" status to the last step event; model loading and the before/after
generation are not training). Writes benchmarks/results/quality.jsonl (one line per run) and prints the table.

    nice -n 10 .venv/bin/python benchmarks/quality/run.py [task ...] [--variants tuned,defaults,prior]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("dates", "extract", "topic", "polite", "codeword")
RESULTS = ROOT / "benchmarks" / "results" / "quality.jsonl"


def train_seconds(events: Path) -> float:
    rows = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    start = next(r["time"] for r in rows if r["type"] == "status" and r.get("state") == "running")
    return max(r["time"] for r in rows if r["type"] == "step") - start


def run_one(task: str, variant: str) -> dict[str, object]:
    run_dir = ROOT / "runs" / "quality" / f"{task}-{variant}-{int(time.time())}"
    spec = ROOT / "benchmarks" / "quality" / "specs" / f"{task}.{variant}.toml"
    load = os.getloadavg()[0]
    wall = time.time()
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ftc"), "run", str(spec), "--no-tui", "--run-dir", str(run_dir),
                           "--out", str(ROOT / "compiled" / "quality" / f"{task}-{variant}")],
                          cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{task} {variant}: ftc run exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ev = json.loads((run_dir / "eval.json").read_text())
    plan = json.loads((ROOT / "compiled" / "quality" / f"{task}-{variant}" / "plan.json").read_text())["settings"]
    return {"task": task, "variant": variant, "exact_match": ev["after"]["exact_match"],
            "exact_match_base": ev["before"]["exact_match"], "train_s": round(train_seconds(run_dir / "events.jsonl"), 1),
            "wall_s": round(time.time() - wall, 1), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "batch_size": plan["batch_size"], "epochs": plan["epochs"],
            "learning_rate": plan["learning_rate"], "warmup": plan["warmup"], "total_steps": plan["total_steps"]}


def main(tasks: list[str], variants: list[str]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for i, task in enumerate(tasks):
        for variant in (variants if i % 2 == 0 else variants[::-1]):
            row = run_one(task, variant)
            with RESULTS.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    chosen = ["tuned", "defaults"]
    if "--variants" in args:  # e.g. --variants prior: the pre-issue-17 defaults, to see the tasks tell values apart
        at = args.index("--variants")
        chosen, args = args[at + 1].split(","), args[:at] + args[at + 2:]
    main(args or list(TASKS), chosen)
