"""The data stage at scale: synthetic ShareGPT conversations through `ftc data`, against a plain
`datasets.map(tokenize, batched=True, num_proc=2)` with the same tokenizer and chat template.

    nice -n 10 .venv/bin/python benchmarks/data.py                 # 1,000,000 conversations
    nice -n 10 .venv/bin/python benchmarks/data.py --rows 50000    # a smaller run

For each of (1) `ftc data SPEC --json` (compile, read, map, clean, encode with labels, split, stats,
then the data cache written), (2) `ftc data` again (from the cache) and (3) the plain map, it
records wall time, rows/s and the peak memory of the whole process tree (the command and its
workers: PSS, so pages a forked worker shares with its parent count once; sampled every 0.2 s
with psutil), and appends one JSON line to benchmarks/results/data.jsonl.
Both sides use 2 worker processes (FTC_DATA_PROCS=2 and num_proc=2) and the bundled
SmolLM2-135M-Instruct tokenizer with its chat template. The data cache goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WORDS = ("the model reads each answer and learns which tokens follow a question about data files rows "
         "columns cache memory workers tokens labels masks training steps batches gradients loss").split()
BASELINE = """
import sys, datasets
from transformers import AutoTokenizer
from ftc.core.bundled import model_path
datasets.disable_progress_bars()
tokenizer = AutoTokenizer.from_pretrained(str(model_path("smollm2-135m-instruct")))
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
def tokenize(batch):
    texts = [tokenizer.apply_chat_template([{"role": ROLES[t["from"]], "content": t["value"]} for t in turns],
                                           tokenize=False) for turns in batch["conversations"]]
    return tokenizer(texts, add_special_tokens=False)
rows = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
out = rows.map(tokenize, batched=True, num_proc=2, remove_columns=rows.column_names)
import pyarrow.compute as pc  # the tokens counted in Arrow: Python lists of 300M ints would cost more than the map
print(len(out), pc.sum(pc.list_value_length(out.data.table.column("input_ids"))).as_py())
"""


def conversation(rng: random.Random, number: int) -> dict[str, object]:
    """A multi-turn ShareGPT conversation of about 300 tokens (2 or 3 exchanges, a system prompt)."""
    turns = [{"from": "system", "value": "Answer briefly and precisely."}]
    exchanges = rng.choice((2, 3))
    for _ in range(exchanges):
        turns.append({"from": "human", "value": f"question {number}: " + " ".join(rng.choices(WORDS, k=30)) + "?"})
        turns.append({"from": "gpt", "value": " ".join(rng.choices(WORDS, k=240 // exchanges - 30)) + "."})
    return {"conversations": turns}


def write_data(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for number in range(rows):
            handle.write(json.dumps(conversation(rng, number)) + "\n")


def _memory(process: psutil.Process) -> int:
    """Proportional set size (forked workers share their parent's pages; RSS would count them twice)."""
    try:
        return int(process.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return int(process.memory_info().rss)


def measure(command: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    """Wall seconds, peak memory (MiB, PSS summed over the process tree) and the last stdout lines."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_memory(p) for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = process.communicate()
    seconds = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{err[-3000:]}")
    return {"seconds": round(seconds, 2), "peak_pss_mib": round(peak / 2**20), "out": out.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="conversations (default 1,000,000)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/data.jsonl"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ftc-data-bench-") as folder:
        work = Path(folder)
        write_data(work / "chats.jsonl", args.rows)
        (work / "s.toml").write_text(
            'name = "bench"\n[model]\nbase = "smollm2-135m-instruct"\n[data]\nsource = "chats.jsonl"\n'
            'format = "chat"\nvalidation = 0.01\nmax_length = 512\n[data.columns]\nmessages = "conversations"\n'
            '[method]\nkind = "lora"\n[train]\nbatch_size = 8\n[hardware]\ndevice = "cpu"\n', encoding="utf-8")
        env = dict(os.environ, FTC_DATA_PROCS="2", FTC_DATA_CACHE=str(work / "cache"), TOKENIZERS_PARALLELISM="false")
        ftc = [sys.executable, "-m", "ftc.cli.main", "data", "s.toml", "--json"]
        first = measure(ftc, env, work)
        stats = json.loads(first.pop("out"))
        again = measure(ftc, env, work)
        again.pop("out")
        plain = measure([sys.executable, "-c", BASELINE, "chats.jsonl", str(work / "hf-cache")], env, work)
        plain_tokens = int(str(plain.pop("out")).split()[-1])
    result = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "rows": args.rows, "procs": 2,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "ftc_data": first | {"rows_per_s": round(args.rows / first["seconds"]),
                             "tokens": stats["splits"]["train"]["tokens"]
                             + stats.get("splits", {}).get("validation", {}).get("tokens", 0)},
        "ftc_data_from_cache": again,
        "plain_map": plain | {"rows_per_s": round(args.rows / plain["seconds"]), "tokens": plain_tokens},
    }
    print(json.dumps(result, indent=2))
    with open(args.results, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
