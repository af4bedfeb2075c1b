"""Training throughput of ftc's emitted script against the tools users would pick instead.

One job (SmolLM2-135M-Instruct bundled, LoRA r8 all-linear, lr 2e-3, batch 8, 40 steps, answer-only
loss) through every tool, alternated in one run: round 1 runs each tool once, round 2 again, ...
Every process runs pinned to one core (`taskset -c CORE`) with benchmarks/stephook on PYTHONPATH,
whose two global torch hooks write one line per optimizer step (time, tokens the step trained).

    .venv/bin/python benchmarks/throughput.py --job yoda --tools ftc,ftc-padded,trl,unsloth --rounds 2
    .venv/bin/python benchmarks/throughput.py --job chat --tools ftc-padded,ftc,ftc-packed --steps 16
    .venv/bin/python benchmarks/throughput.py --report     # the tables from results/throughput.jsonl

Per run: steady-state tokens/s (non-padding tokens of steps 6..N over their time; of the last 3/4 in runs under 20 steps), seconds per step
there, time to first step (launch to the end of step 1: imports, model load, data, the first step),
whole-process seconds, peak RSS (the process's maxrss, from wait4). Jobs: `yoda` is the issue's job
(specs/data/yoda.jsonl, max length 96); `chat` is variable-length multi-turn chat (made here,
1 to 8 exchanges, skewed short as chat logs are, max length 384) where padding dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from peers import TOOLS, Job, Unavailable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "throughput.jsonl"
WARMUP_STEPS = 5  # steps left out of the steady state (first allocations, lazy inits)


def _pairs(rows: list[dict], path: Path) -> Path:
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps({"prompt": [{"role": "user", "content": r["sentence"]}],
                                "completion": [{"role": "assistant", "content": r["yoda"]}]}) + "\n")
    return path


def _messages(convs: list[list[tuple[str, str]]], path: Path) -> Path:
    with path.open("w") as f:
        for conv in convs:
            turns = [{"role": role, "content": text} for q, a in conv for role, text in (("user", q), ("assistant", a))]
            f.write(json.dumps({"messages": turns}) + "\n")
    return path


def make_job(name: str, work: Path, model: Path, steps: int | None, device: str = "cpu") -> Job:
    rows = [json.loads(line) for line in (ROOT / "specs/data/yoda.jsonl").read_text().splitlines() if line.strip()]
    if name == "yoda":
        msgs = _messages([[(r["sentence"], r["yoda"])] for r in rows], work / "yoda-messages.jsonl")
        return Job("yoda", (ROOT / "specs/data/yoda.jsonl").resolve(), msgs, _pairs(rows, work / "yoda-pairs.jsonl"),
                   model, steps or 40, 96, device=device)
    rng = random.Random(0)  # the same conversations every run
    convs = []
    for _ in range(600):
        exchanges = min(8, 1 + int(rng.expovariate(1 / 2.0)))  # mostly 1-3 exchanges, a tail to 8
        convs.append([(r["sentence"], r["yoda"]) for r in rng.sample(rows, exchanges)])
    msgs = _messages(convs, work / "chat-messages.jsonl")
    return Job("chat", msgs, msgs, None, model, steps or 16, 384, device=device)


def _steady(steps: list[dict]) -> dict:
    warm = min(WARMUP_STEPS, len(steps) // 4)  # short runs (a loaded machine) keep at least 3/4 of their steps
    if len(steps) < 4:
        return {}
    tail = steps[warm:]
    seconds = tail[-1]["t"] - steps[warm - 1]["t"]
    tokens = sum(s["tokens"] for s in tail)
    return {"tokens_per_s": tokens / seconds, "s_per_step": seconds / len(tail),
            "tokens_per_step": tokens / len(tail), "positions_per_step": sum(s["positions"] for s in tail) / len(tail)}


def run_one(tool: str, job: Job, work: Path, core: str, timeout: float) -> dict:
    record: dict = {"tool": tool, "job": job.name, "device": job.device, "steps_planned": job.steps}
    work.mkdir(parents=True)
    try:
        argv, cwd = TOOLS[tool](job, work)
    except Unavailable as exc:
        return {**record, "unavailable": str(exc)}
    if (plan := work / "compiled" / "plan.json").exists():  # ftc's tools: what the planner chose, on record
        record["precision"] = json.loads(plan.read_text())["settings"]["precision"]
    steps_file = work / "steps.jsonl"
    env = {**os.environ, "PYTHONPATH": str(HERE / "stephook"), "FTC_BENCH_STEPS": str(steps_file),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "WANDB_DISABLED": "true"}
    command = argv if job.cuda else ["taskset", "-c", core, *argv]
    start = time.time()
    with (work / "log.txt").open("w") as log:
        child = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        # a tool that hangs after failing (axolotl 0.19 did, after a CUDA-only kernel's error) is stopped
        timer = threading.Timer(timeout, os.kill, (child.pid, signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
    end = time.time()
    if end - start >= timeout:
        record["timed_out_s"] = timeout
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()] if steps_file.exists() else []
    record.update(command=" ".join(command), exit=os.waitstatus_to_exitcode(status), wall_s=end - start,
                  peak_rss_mib=usage.ru_maxrss / 1024, steps=len(steps), **_steady(steps),
                  first_step_s=steps[0]["t"] - start if steps else None, load=os.getloadavg()[0])
    if record["exit"] or len(steps) < job.steps:
        record["log_tail"] = (work / "log.txt").read_text()[-1500:]
    return record


def _bundled_model() -> Path:
    from ftc.core.bundled import model_path

    return Path(model_path("smollm2-135m-instruct"))


def report(records: list[dict]) -> str:
    out = []
    for job, device in sorted({(r["job"], r.get("device", "cpu")) for r in records}):
        rows = [r for r in records if r["job"] == job and r.get("device", "cpu") == device]
        out.append(f"\n### job `{job}` on {device}\n\n| tool | runs | tokens/s (each run) | s/step | tokens/step (padded) | "
                   "first step s | process s | peak RSS MiB | load |\n|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for tool in dict.fromkeys(r["tool"] for r in rows):
            mine = [r for r in rows if r["tool"] == tool]
            ok = [r for r in mine if "tokens_per_s" in r and not r.get("exit")]
            if not ok:
                last = mine[-1]
                why = ("did not run: " + (last.get("unavailable") or f"exit {last['exit']}: see log_tail in the record")
                       if last.get("unavailable") or last["exit"]
                       else f"ran {last['steps']} steps, too few for a steady state (4+)")
                out.append(f"| {tool} | 0 | {why[:220]} | | | | | | |")
                continue
            med = lambda key: statistics.median(r[key] for r in ok)  # noqa: E731
            each = ", ".join(f"{r['tokens_per_s']:.0f}" for r in ok)
            precisions = sorted({r["precision"] for r in ok if "precision" in r})  # ftc's: as planned
            name = f"{tool} ({', '.join(precisions)})" if precisions else tool
            out.append(f"| {name} | {len(ok)} | **{med('tokens_per_s'):.0f}** ({each}) | {med('s_per_step'):.2f} | "
                       f"{med('tokens_per_step'):.0f} ({med('positions_per_step'):.0f}) | {med('first_step_s'):.1f} | "
                       f"{med('wall_s'):.1f} | {max(r['peak_rss_mib'] for r in ok):,.0f} | "
                       f"{min(r['load'] for r in ok):.1f}-{max(r['load'] for r in ok):.1f} |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--job", choices=["yoda", "chat"], default="yoda")
    p.add_argument("--tools", default="ftc,ftc-padded,trl,trl-cli,unsloth,llamafactory,axolotl")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, help="optimizer steps (default: 40 for yoda, 16 for chat)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the GPU section (see README)")
    p.add_argument("--core", default="1", help="the CPU list for taskset (default: core 1)")
    p.add_argument("--work", type=Path, help="keep every run's files here (default: a temporary folder)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one tool's run may take (default 1800)")
    p.add_argument("--report", action="store_true", help="print the tables of the results file")
    p.add_argument("--results", type=Path, default=RESULTS,
                   help="the results file (default: results/throughput.jsonl; a smoke run writes elsewhere)")
    a = p.parse_args()
    if a.report:
        print(report([json.loads(line) for line in a.results.read_text().splitlines()]))
        return
    tools = a.tools.split(",")
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        sys.exit(f"--tools: unknown {unknown}; known: {', '.join(TOOLS)}")
    work = a.work or Path(tempfile.mkdtemp(prefix="ftc-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    job = make_job(a.job, work, _bundled_model(), a.steps, a.device)
    session = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}", flush=True)
    records = []
    for round_ in range(1, a.rounds + 1):
        for tool in tools:
            run = run_one(tool, job, work / f"{tool}-{round_}", a.core, a.timeout)
            record = {"session": session, "round": round_, **run}
            records.append(record)
            with a.results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            print(json.dumps({k: v for k, v in record.items() if k not in ("log_tail", "command")}), flush=True)
    print(report(records))
    if a.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
