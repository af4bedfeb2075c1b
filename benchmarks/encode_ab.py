"""The chat encoder before and after batching (issue 13), alternated in one process (A, B, A, B, A, B) on the
bundled SmolLM2-135M-Instruct tokenizer and data.py's synthetic ShareGPT conversations; asserts identical
input_ids/labels each time. A measures tests/test_data_encode_batch.reference_chat (the replaced encoder),
B ftc.core.data.batch.encode_many (what the data stage's workers call), one process each.

    TOKENIZERS_PARALLELISM=false nice -n 10 .venv/bin/python benchmarks/encode_ab.py
"""
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]
from data import conversation
from transformers import AutoTokenizer
from ftc.core.bundled import model_path
from ftc.core.data.batch import encode_many
from helpers import data_settings
from test_data_encode_batch import reference_chat
tok = AutoTokenizer.from_pretrained(str(model_path("smollm2-135m-instruct")))
rng = random.Random(0)
ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
ex = [{"messages": [{"role": ROLES[t["from"]], "content": t["value"]} for t in conversation(rng, i)["conversations"]]} for i in range(768)]
s = data_settings("chat", 512)
for rep in range(3):
    print(os.getloadavg()[0], end=" ")
    t = time.perf_counter(); old = [reference_chat(tok, e["messages"], 512) for e in ex]; a = time.perf_counter() - t
    t = time.perf_counter(); new = [r for i in range(0, len(ex), 256) for r in encode_many(tok, ex[i:i+256], s)]; b = time.perf_counter() - t
    assert old == new
    print(f"A old encoder {a/len(ex)*1000:.2f} ms/row  B batched {b/len(ex)*1000:.2f} ms/row  (identical: {old == new})")
