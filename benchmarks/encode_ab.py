"""The chat encoder of another revision (A) against this tree's (B), alternated in one process (A, B, A, B, A, B)
on the bundled SmolLM2-135M-Instruct tokenizer and data.py's synthetic ShareGPT conversations, in chunks of 256
as the data stage's workers call it; asserts identical input_ids/labels every time. A is
ftc/core/data/batch.py as it was at REV (read with `git show`, run against this tree's encode.py), B is
ftc.core.data.batch.encode_many. One process, so the machine's load hits both alike.

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
for rep in range(3):
    load = os.getloadavg()[0]
    t = time.perf_counter()
    old = [r for i in range(0, len(ex), 256) for r in before.encode_many(tok, ex[i:i + 256], s)]
    a = time.perf_counter() - t
    t = time.perf_counter()
    new = [r for i in range(0, len(ex), 256) for r in encode_many(tok, ex[i:i + 256], s)]
    b = time.perf_counter() - t
    assert old == new
    print(f"load {load:.1f}: A {args.before} {a / len(ex) * 1000:.2f} ms/row  B this tree {b / len(ex) * 1000:.2f} "
          f"ms/row  ({a / b:.2f}x; identical input_ids and labels: {old == new})", flush=True)
