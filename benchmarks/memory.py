"""Measure the emitted train.py's peak memory and compare it with the estimate in its plan.json.

Each configuration is a spec (a tiny random local model or the bundled SmolLM2-135M, small local
data, a few optimizer steps), compiled by ftc's own `compile_spec`; its train.py runs unchanged
under the profiler (benchmarks/profile_run.py), every process writing its own peak. What is
measured is what runs: data loading, generation before and after (`eval.compare`), validation,
the training steps and saving. See benchmarks/README.md.

    python benchmarks/memory.py                 # the whole matrix -> results/cpu.jsonl, README table
    python benchmarks/memory.py --list          # the configurations, run nothing
    python benchmarks/memory.py --only ia3,tiny-tied   # the configurations whose key has every word
    python benchmarks/memory.py --report        # re-compile the stored cases (new estimates) -> README.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results" / "cpu.jsonl"
README = HERE / "README.md"
MiB = 2**20
STEPS = 3  # the first step allocates the optimizer state; the later ones are the steady state
MAX_LENGTH = 128
# Tiny Llama shapes (random weights, the tests' BPE tokenizer padded with added tokens up to the
# vocabulary): big enough that weights, activations and logits each weigh, small enough for seconds a step.
# Every width is a multiple of 32, as bitsandbytes' CPU 4-bit kernel needs (N % block_n).
TINY = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=4096, max_position_embeddings=512)
MODELS = {"tiny": dict(TINY, tie_word_embeddings=False), "tiny-tied": dict(TINY, tie_word_embeddings=True)}
KINDS = ("full", "freeze", "linear_probe", "lora", "qlora", "lora8", "dora", "rslora", "pissa", "loraplus",
         "prefix", "ptuning", "prompt", "ia3", "llama_adapter")
# Method settings that differ from the spec defaults: tiny models have 4 blocks.
METHOD_EXTRA = {"llama_adapter": {"layers": 2}}


@dataclass(frozen=True)
class Case:
    model: str  # a key of MODELS, or "smollm2" (the bundled SmolLM2-135M-Instruct)
    kind: str
    micro_batch: int
    checkpointing: bool
    strategy: str = ""  # several processes: 2 gloo processes under this strategy ("zero3-offload": + optimizer offload)
    device: str = "cpu"  # "cuda": benchmarks/memory_cuda.py
    devices: int = 2  # processes under `strategy` (ZeRO-3 + offload is valid on one GPU)
    objective: str = ""  # a preference objective on preference rows ("dpo-precomputed": reference = "precomputed")
    precision: str = ""  # hardware.precision; "": fp32 on CPU (as the CPU cases were measured), the planner's on CUDA
    attention: str = ""  # hardware.attention (CUDA: "sdpa" or "flash_attention_2"); "": the planner's

    @property
    def key(self) -> str:
        key = f"{self.model} {self.kind} mb{self.micro_batch} {'gc' if self.checkpointing else 'nogc'}"
        key = f"cuda {key}" if self.device == "cuda" else key
        key = f"{key} {self.objective}" if self.objective else key
        key = f"{key} {self.precision}" if self.precision else key
        key = f"{key} {self.attention}" if self.attention else key
        return f"{key} {self.devices}x{self.strategy}" if self.strategy else key


def matrix() -> list[Case]:
    """Every kind with and without checkpointing (where the method allows it) at a padded
    micro-batch of 4, tied heads at micro-batch 1, and a few runs of the real SmolLM2-135M."""
    from ftc.compiler.methods import METHODS

    cases = [Case("tiny", k, 4, gc) for k in KINDS for gc in (False, True)
             if not gc or METHODS[k].checkpointing_ok]
    cases += [Case("tiny-tied", k, 1, gc) for k in ("full", "freeze", "linear_probe", "lora", "ia3", "prompt")
              for gc in (False, True) if not gc or METHODS[k].checkpointing_ok]
    cases += [Case("tiny", k, 1, False) for k in ("full", "qlora", "prefix")]
    cases += [Case("smollm2", "lora", 4, False), Case("smollm2", "ia3", 4, True), Case("smollm2", "freeze", 4, True),
              Case("smollm2", "full", 1, False), Case("smollm2", "qlora", 2, True),
              Case("smollm2", "qlora", 2, False)]
    # 2 processes (gloo): the per-rank peak of each strategy against its per-device estimate; FSDP2 is
    # refused on CPU (accelerate runs it as DDP there) and measured by memory_cuda.py on 2+ GPUs
    cases += [Case("tiny", k, 4, False, s) for k in ("lora", "full")
              for s in ("ddp", "zero2", "zero3", "zero3-offload")]
    # preference objectives: doubled rows, the reference (adapters off, a copy, or precomputed), full logits
    cases += [Case("tiny", k, 4, False, objective=o) for k, o in (
        ("lora", "dpo"), ("full", "dpo"), ("full", "dpo-precomputed"), ("lora", "kto"), ("lora", "orpo"),
        ("lora", "simpo"))]
    cases += [Case("smollm2", "lora", 4, False, objective="dpo")]
    # bf16 as planned on a CPU with native bf16 (frozen bases; QLoRA's embeddings, head and norms in bf16)
    cases += [Case("tiny", k, 4, gc, precision="bf16") for k in ("lora", "qlora", "ia3") for gc in (False, True)]
    cases += [Case("smollm2", k, 2, False, precision="bf16") for k in ("lora", "qlora")]
    return cases


def build_model(name: str, directory: Path) -> Path:
    """A random Llama of one of the MODELS shapes, saved with its tokenizer, built once."""
    if (directory / "config.json").exists():
        return directory
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.helpers import build_tiny_model

    build_tiny_model(directory)  # the tests' tokenizer (and a model replaced below)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    shape = MODELS[name]
    tokenizer.add_tokens([f"<t{i}>" for i in range(int(shape["vocab_size"]) - len(tokenizer))])
    tokenizer.save_pretrained(directory)
    torch.manual_seed(0)
    config = LlamaConfig(**shape, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def write_data(path: Path) -> Path:
    """Completion rows: half run past MAX_LENGTH (truncated to it), half about 3/4 of it, so that a
    padded micro-batch nearly always pads to MAX_LENGTH, the length the estimate assumes."""
    words = "the quick brown fox jumps over the lazy dog red green blue cat bird fish one two three".split()
    rng = random.Random(0)
    rows = []
    for i in range(48):
        n = 400 if i % 2 else rng.randint(60, 80)
        rows.append({"prompt": " ".join(rng.choices(words, k=6)), "completion": " ".join(rng.choices(words, k=n))})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _budget(case: Case) -> str:
    return "vram_gb = 80\n" if case.device == "cuda" else ""  # a cuda plan needs a budget; 80 GB fits every case


def write_pairs(path: Path) -> Path:
    """Preference rows whose chosen answers run past MAX_LENGTH (truncated to it) and whose rejected ones are
    about 3/4 of it, so a padded micro-batch pads to MAX_LENGTH, the length the estimate assumes."""
    words = "the quick brown fox jumps over the lazy dog red green blue cat bird fish one two three".split()
    rng = random.Random(0)
    rows = [{"prompt": " ".join(rng.choices(words, k=6)), "chosen": " ".join(rng.choices(words, k=400)),
             "rejected": " ".join(rng.choices(words, k=rng.randint(60, 80)))} for _ in range(48)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _objective(case: Case, compare: int) -> tuple[str, str, str]:
    """(data.format, [train] lines, [eval] lines) of a case: a preference objective measures its own accuracy."""
    if not case.objective:
        return "completion", "", f"compare = {compare}\n" + ("max_new_tokens = 8\n" if compare else "")
    objective, _, reference = case.objective.partition("-")
    return ("preference", f'objective = "{objective}"\n' + (f'reference = "{reference}"\n' if reference else ""),
            "")


def _hardware(case: Case) -> str:
    """The [hardware] lines of a case: the precision pinned on CPU, where the planner reads the machine's flags."""
    precision = case.precision or ("fp32" if case.device == "cpu" else "")
    device = (f'device = "{case.device}"\n' + (f'precision = "{precision}"\n' if precision else "")
              + (f'attention = "{case.attention}"\n' if case.attention else "") + _budget(case))
    if not case.strategy:
        return device
    strategy, _, offload = case.strategy.partition("-")
    return (f'{device}devices = {case.devices}\nstrategy = "{strategy}"\n'
            + ('offload = "optimizer"\n' if offload else ""))


def write_spec(case: Case, base: str, data: Path, path: Path) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in METHOD_EXTRA.get(case.kind, {}).items())
    world = case.devices if case.strategy else 1
    compare = 0 if case.strategy.startswith(("fsdp", "zero3")) else 2  # sharded weights: no generation
    data_format, train, evaluation = _objective(case, compare)
    path.write_text(f"""name = "bench"
[model]
base = "{base}"
[data]
source = "{data}"
format = "{data_format}"
validation = 0.1
max_length = {MAX_LENGTH}
[method]
kind = "{case.kind}"
{extra}[train]
{train}max_steps = {STEPS}
batch_size = {case.micro_batch * world}
micro_batch_size = {case.micro_batch}
gradient_checkpointing = {str(case.checkpointing).lower()}
[hardware]
{_hardware(case)}[eval]
{evaluation}""", encoding="utf-8")
    return path


def processes(plan: dict[str, Any]) -> int:
    """How many processes the plan launches (data parallel over its devices)."""
    settings = plan.get("settings", {})

    def value(key: str) -> int:
        item = settings.get(key, 1)
        return int(item.get("value", 1) if isinstance(item, dict) else item)  # a typed Setting, or the value

    return value("devices") * value("nodes")


def compile_case(case: Case, work: Path) -> tuple[Path, dict[str, Any]]:
    """Write the case's model, data and spec into a new folder of `work`, compile it with ftc into
    folder/build; returns the folder and the compiled plan.json."""
    from ftc.compiler.compile import compile_spec

    base = "smollm2-135m-instruct" if case.model == "smollm2" else str(build_model(case.model, work / case.model))
    folder = Path(tempfile.mkdtemp(prefix=case.key.replace(" ", "_") + ".", dir=work))
    rows = (write_pairs if case.objective else write_data)(folder / "rows.jsonl")
    spec = write_spec(case, base, rows, folder / "spec.toml")
    compiled = compile_spec(spec, folder / "compiled")
    compiled.write()
    return folder, json.loads((folder / "compiled" / "plan.json").read_text(encoding="utf-8"))


def run_case(case: Case, work: Path, timeout: float) -> dict[str, Any]:
    """Compile the case's spec with ftc, run its train.py under the profiler, gather the peaks."""
    folder, plan = compile_case(case, work)
    n = processes(plan)
    wrapper = [str(HERE / "profile_run.py"), str(folder / "peaks"), str(folder / "compiled" / "train.py"), "run"]
    launch = [sys.executable, *wrapper] if n == 1 and not case.strategy else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}", *wrapper]
    t0 = time.monotonic()
    proc = subprocess.run(launch, cwd=folder, capture_output=True, text=True, timeout=timeout)
    record: dict[str, Any] = {"key": case.key, "case": case.__dict__, "estimate": plan["memory"],
                              "seconds": round(time.monotonic() - t0, 1), "processes": n}
    ranks = sorted((folder / "peaks").glob("rank*.json"))
    if proc.returncode or len(ranks) != n:
        record["error"] = f"exit {proc.returncode}: {proc.stderr[-1500:]}"
        return record
    record["ranks"] = [json.loads(p.read_text(encoding="utf-8")) for p in ranks]
    return record


def measured(record: dict[str, Any]) -> dict[str, Any]:
    """The largest process's whole-script peak, with its phase and components."""
    best = max(record["ranks"], key=lambda r: max(p["bytes"] for p in r["peaks"].values()))
    phase, peak = max(best["peaks"].items(), key=lambda kv: kv[1]["bytes"])
    return {"phase": phase, **peak}


def others(record: dict[str, Any]) -> int:
    """The largest peak outside the training steps: setup, generation, validation, saving."""
    return max((p["bytes"] for r in record["ranks"] for ph, p in r["peaks"].items() if ph != "train"), default=0)


def error(record: dict[str, Any]) -> float:
    return (record["estimate"]["total"] - measured(record)["bytes"]) / measured(record)["bytes"]


# -------------------------------------------------------------------------------- report


def mib(n: float) -> str:
    return f"{n / MiB:,.1f}"


def table_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"| {r['key']} | – | – | failed: {r['error'].splitlines()[-1][:80]} | | | | | | | |"
    e, m = r["estimate"], measured(r)
    est_other = e["activations"] + e["logits"]
    return (f"| {r['key']} | {mib(e['total'])} | {mib(m['bytes'])} | {error(r):+.1%} "
            f"| {mib(e['weights'] + e['trainable'])} / {mib(m['weights'])} | {mib(e['gradients'])} / {mib(m['gradients'])} "
            f"| {mib(e['optimizer'])} / {mib(m['optimizer'])} | {mib(est_other)} / {mib(m['other'])} "
            f"| {m['phase']} (`{m['op']}`) | {mib(others(r))} | {r['seconds']:.0f} |")


def summary(records: list[dict[str, Any]]) -> str:
    ok = [r for r in records if "error" not in r]
    errs = sorted((error(r), r["key"]) for r in ok)
    if not errs:
        return "no measurement"
    inside = sum(1 for e, _ in errs if -0.05 <= e <= 0.10)
    return (f"{len(ok)} configurations measured ({len(records) - len(ok)} failed). Estimate vs measured: worst under "
            f"{errs[0][0]:+.1%} ({errs[0][1]}), worst over {errs[-1][0]:+.1%} ({errs[-1][1]}), median "
            f"{statistics.median(e for e, _ in errs):+.1%}; {inside} of {len(ok)} within the bounds "
            f"(at most 5 % under, at most 10 % over).")


def report(records: list[dict[str, Any]], env: dict[str, str]) -> str:
    head = ("| configuration | est | meas | err | weights est / meas | grads | optimizer | act+logits est / other meas "
            "| peak in (op) | outside train | s |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    versions = ", ".join(f"{k} {v}" for k, v in env.items())
    return (f"Measured {time.strftime('%Y-%m-%d')} on CPU ({versions}). MiB (2^20 bytes); err = (est − meas) / meas; "
            f"`meas` = the largest live-tensor peak of the whole script.\n\n{summary(records)}\n\n{head}\n"
            + "\n".join(table_row(r) for r in records) + "\n")


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("torch", "transformers", "peft", "trl", "bitsandbytes")}


def write_readme(text: str) -> None:
    start, end = "<!-- results:cpu -->", "<!-- /results:cpu -->"
    readme = README.read_text(encoding="utf-8")
    before, rest = readme.split(start, 1) if start in readme else (readme + "\n", end)
    after = rest.split(end, 1)[1] if end in rest else ""
    README.write_text(f"{before}{start}\n{text}{end}{after}", encoding="utf-8")


def load(path: Path) -> dict[str, dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return {r["key"]: r for r in map(json.loads, filter(None, lines))}


def selfcheck(work: Path) -> str:
    """profile_run.py on a script that holds a known 100 MiB and 25 MiB: the peak must be 125 MiB
    (in the setup phase, no Trainer) and nothing may stay live at the end."""
    script = work / "known.py"
    script.write_text("import torch\na = torch.empty(100 * 2**20, dtype=torch.uint8)\n"
                      "b = torch.empty(25 * 2**20, dtype=torch.uint8)\ndel a, b\n", encoding="utf-8")
    subprocess.run([sys.executable, str(HERE / "profile_run.py"), str(work / "known"), str(script)], check=True,
                   capture_output=True)
    got = json.loads((work / "known" / "rank0.json").read_text(encoding="utf-8"))
    peak, end = got["peaks"]["setup"]["bytes"], got["end_live"]
    if peak != 125 * MiB or end != 0:
        raise SystemExit(f"profiler self-check failed: peak {peak} B (want {125 * MiB}), {end} B live at the end")
    return "Self-check: a known 100 MiB + 25 MiB measured as 125.0 MiB, 0 B live at the end."


def save(path: Path, records: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = [records[c.key] for c in matrix() if c.key in records]
    path.write_text("".join(json.dumps(x) + "\n" for x in ordered), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the configurations and stop")
    ap.add_argument("--only", default="", help="comma-separated words every selected key contains")
    ap.add_argument("--report", action="store_true",
                    help="re-compile the stored configurations (today's estimates) and rewrite the README table")
    ap.add_argument("--work", default=None, help="folder for models, specs and runs (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--results", default=str(RESULTS), help="the results file (default: results/cpu.jsonl)")
    args = ap.parse_args(argv)
    words = [w for w in args.only.split(",") if w]
    cases = [c for c in matrix() if all(w in c.key.split() for w in words)]
    if args.list:
        print("\n".join(c.key for c in cases))
        return 0
    results = Path(args.results)
    work = Path(args.work or tempfile.mkdtemp(prefix="ftc-bench."))
    work.mkdir(parents=True, exist_ok=True)
    if not args.report:
        print(selfcheck(work), flush=True)
    for case in cases:
        if not args.report:
            r = run_case(case, work, args.timeout)
            print(table_row(r), flush=True)
        elif case.key in (stored := load(results)):  # the estimate of today's compiler, same measurement
            r = {**stored[case.key], "estimate": compile_case(case, work)[1]["memory"]}
        else:
            continue
        save(results, {**load(results), case.key: r})  # re-read: another run may share the file
    records = load(results)
    ordered = [records[c.key] for c in matrix() if c.key in records]
    if results == RESULTS:
        write_readme(report(ordered, versions()))
    print(summary(ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
