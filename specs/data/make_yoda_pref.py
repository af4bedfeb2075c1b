"""Generate ``yoda_pref.jsonl``: the DPO demo's preference set, from ``yoda.jsonl`` (make_yoda.py).

Each row (with a short system prompt) asks for a sentence in Yoda's word order; the Yoda-style inversion is ``chosen`` and the plain
sentence, unchanged, is ``rejected``. Deterministic: the rows of yoda.jsonl in their order.

    python specs/data/make_yoda_pref.py   # rewrites specs/data/yoda_pref.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
PROMPT = "Say it the way Yoda would: {sentence}"
SYSTEM = "Answer in one sentence."  # short: SmolLM2's template adds a 30-token system prompt when a row has none


def main() -> None:
    rows = [json.loads(line) for line in (HERE / "yoda.jsonl").read_text(encoding="utf-8").splitlines()]
    with (HERE / "yoda_pref.jsonl").open("w", encoding="utf-8") as out:
        for row in rows:
            pair = {"system": SYSTEM, "prompt": PROMPT.format(sentence=row["sentence"]), "chosen": row["yoda"],
                    "rejected": row["sentence"]}
            out.write(json.dumps(pair, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
