"""The chat encoder of another revision (A) against this tree's (B), alternated in one process (A, B, A, B, A, B)
on the bundled SmolLM2-135M-Instruct tokenizer and data.py's synthetic ShareGPT conversations, in chunks of 256
as the data stage's workers call it; asserts identical input_ids/labels every time. A is
ftc/core/data/batch.py as it was at REV (read with `git show`, run against this tree's encode.py), B is
ftc.core.data.batch.encode_many. One process, so the machine's load hits both alike; each line gives wall and CPU time (process_time).

    TOKENIZERS_PARALLELISM=false nice -n 19 .venv/bin/python benchmarks/encode_ab.py --before b0da387
"""
import argparse
import os
import random
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
from data import conversation  # noqa: E402
from helpers import data_settings  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from ftc.core.bundled import model_path  # noqa: E402
from ftc.core.data.batch import encode_many  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--before", default="b0da387", help="the git revision whose core/data/batch.py is A")
parser.add_argument("--rows", type=int, default=768)
parser.add_argument("--repeats", type=int, default=3)
args = parser.parse_args()
source = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.before}:core/data/batch.py"], check=True,
                        capture_output=True, text=True).stdout
before = types.ModuleType("batch_before")
exec(compile(source, f"{args.before}:core/data/batch.py", "exec"), before.__dict__)  # noqa: S102 - our own file

tok = AutoTokenizer.from_pretrained(str(model_path("smollm2-135m-instruct")))
rng = random.Random(0)
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
ex = [{"messages": [{"role": ROLES[t["from"]], "content": t["value"]} for t in conversation(rng, i)["conversations"]]}
      for i in range(args.rows)]
s = data_settings("chat", 512)
def timed(encode) -> tuple[list, float, float]:
    """Its output, wall seconds and this process's CPU seconds (the CPU time is what the load does not inflate)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = [r for i in range(0, len(ex), 256) for r in encode(tok, ex[i:i + 256], s)]
    return out, time.perf_counter() - wall, time.process_time() - cpu


for rep in range(args.repeats):
    load = os.getloadavg()[0]
    old, a, a_cpu = timed(before.encode_many)
    new, b, b_cpu = timed(encode_many)
    assert old == new
    per = 1000 / len(ex)
    print(f"load {load:.1f}: A {args.before} {a * per:.2f} ms/row ({a_cpu * per:.2f} CPU)  B this tree {b * per:.2f} "
          f"ms/row ({b_cpu * per:.2f} CPU)  CPU {a_cpu / b_cpu:.2f}x; identical input_ids and labels: {old == new}",
          flush=True)
