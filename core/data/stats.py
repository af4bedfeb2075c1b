"""The stage's numbers: per-split counts and length percentiles, padding and packing, and how they
are shown (the log lines and `data` event of train.py, dropped.jsonl and stats.json; cli/datashow.py
renders `ftc data`'s tables).
"""

from __future__ import annotations

import json
import math
import random
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftc.core.data.encode import Encoded
from ftc.core.data.load import DROP_REASONS, Source
from ftc.core.data.settings import DataSettings

if TYPE_CHECKING:  # stage.py imports this module
    from ftc.core.data.stage import Prepared


def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if len(sorted_values) == 0:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return int(sorted_values[rank - 1])


class Columns:
    """What the statistics, the split and the mixing weights need of each kept example, in order, as
    compact arrays (no token lists): its source (index in the stage's sources), row number, tokens kept,
    length before truncation, trained tokens, whether it was truncated."""

    FIELDS = ("source", "row", "tokens", "length", "trained", "truncated")

    def __init__(self, arrays: dict[str, Any] | None = None) -> None:
        self.arrays = arrays or {name: array("q") for name in self.FIELDS}

    def add(self, encoded: Sequence[Encoded], index: dict[str, int]) -> None:
        """Append examples; `index`: their source's position by name."""
        a = self.arrays
        for e in encoded:
            encoding = e.encoding
            a["source"].append(index[e.source])
            a["row"].append(e.row)
            a["tokens"].append(len(encoding["input_ids"]))
            a["length"].append(encoding["length"])
            a["trained"].append(encoding["trained_tokens"])
            a["truncated"].append(bool(encoding["truncated"]))

    def __len__(self) -> int:
        return len(self.arrays["row"])

    def __getitem__(self, name: str) -> Any:
        import numpy as np

        return np.frombuffer(self.arrays[name], dtype=np.int64).copy() if len(self) else np.zeros(0, dtype=np.int64)

    def take(self, positions: Sequence[int]) -> Columns:
        """These examples, in this order."""
        import numpy as np

        where = np.asarray(positions, dtype=np.int64)
        return Columns({name: array("q", self[name][where].tobytes()) for name in self.FIELDS})


def _split_stats(items: Columns) -> dict[str, Any]:
    import numpy as np

    lengths, full, truncated = items["tokens"], np.sort(items["length"]), items["truncated"].astype(bool)
    tokens = int(lengths.sum())
    trained = int(items["trained"].sum())
    return {
        "examples": len(items),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_share": round(trained / tokens, 4) if tokens else 0.0,
        "truncated": int(truncated.sum()),
        "truncated_rows": items["row"][truncated][:20].tolist(),
        "length": {f"p{q}": percentile(full, q) for q in (50, 90, 95, 99)} | {"max": int(full[-1]) if len(full) else 0},
    }


def padding(lengths: Sequence[int], micro_batch_size: int, seed: int) -> int:
    """Pad tokens of one epoch in shuffled micro-batches padded to their longest row."""
    order = list(lengths)
    random.Random(seed).shuffle(order)
    return sum(max(batch) * len(batch) - sum(batch)
               for batch in (order[i:i + micro_batch_size] for i in range(0, len(order), micro_batch_size)))


def packed_rows(lengths: Sequence[int], max_length: int) -> int:
    """Rows of `max_length` tokens that best-fit-decreasing packing fills (what TRL's "bfd" does)."""
    bins: list[int] = []
    for length in sorted(lengths, reverse=True):
        fits = [i for i, room in enumerate(bins) if room >= length]
        if fits:
            best = min(fits, key=lambda i: bins[i])
            bins[best] -= length
        else:
            bins.append(max_length - length)
    return len(bins)


def statistics(train: Columns, validation: Columns, dropped: list[dict[str, Any]], rows_read: int,
               settings: DataSettings, micro_batch_size: int, packing: bool,
               padding_free: bool = False) -> dict[str, Any]:
    """The numbers `ftc data --json` prints and train.py reports in its `data` event (`train`: as it trains,
    a mix weighted)."""
    reasons = Counter(d["reason"] for d in dropped)
    lengths = train["tokens"].tolist()
    pads = padding(lengths, micro_batch_size, settings.seed)
    stats: dict[str, Any] = {
        "rows_read": rows_read,
        "splits": {"train": _split_stats(train)} | ({"validation": _split_stats(validation)} if validation else {}),
        "dropped": {reason: reasons.get(reason, 0) for reason in DROP_REASONS},
        "duplicates_removed": reasons.get("duplicate", 0) + reasons.get("near_duplicate", 0),
        "untrained_rows": [d["row"] for d in dropped if d["reason"] == "untrained"][:20],
        "padding": {"micro_batch_size": micro_batch_size, "padded_tokens": pads,
                    "padding_share": round(pads / (pads + sum(lengths)), 4) if lengths else 0.0},
    }
    if packing:
        rows = packed_rows(lengths, settings.max_length)
        stats["packing"] = {"packed_rows": rows, "examples_per_row": round(len(lengths) / rows, 2) if rows else 0.0,
                            "padded_tokens_saved": pads}
    if padding_free:
        stats["padding_free"] = {"padded_tokens_saved": pads}
    return stats


def source_stats(sources: list[Source], train: Columns, weighted: Columns) -> dict[str, Any]:
    """Per mixed source: rows read, weight, training examples once and as weighted."""
    once, repeated = train["source"].tolist(), weighted["source"].tolist()
    return {s.name: {"rows_read": s.count, "weight": s.weight, "train_examples": once.count(i),
                     "weighted_examples": repeated.count(i)}
            for i, s in enumerate(sources)}


CHANGES = {"converted": "numbers or booleans read as text", "trimmed": "conversations cut after their last answer"}


def changed_stats(sources: list[Source]) -> dict[str, Any]:
    """Rows kept but changed while mapped, per change: how many, and the first ones (`file:line`)."""
    return {change: {"rows": sum(len(s.changed.get(change, [])) for s in sources),
                     "first_rows": [s.label(n) for s in sources for n in s.changed.get(change, [])][:10]}
            for change in CHANGES}


def summary_line(split: str, stats: dict[str, Any]) -> str:
    """One line per split for the log."""
    s = stats["splits"][split]
    return (f"{split}: {s['examples']} examples, {s['tokens']:,} tokens, {s['trained_tokens']:,} trained "
            f"({100 * s['trained_share']:.0f} %), {s['truncated']} truncated, longest {s['length']['max']} tokens")


def report(prepared: Prepared, events: Any) -> None:
    """Print and record the stage's counts (the `data` event) and warnings about truncation and drops."""
    stats = prepared.stats
    if prepared.cached:
        print(f"data: prepared before, read from the data cache ({prepared.cached})", flush=True)
    for split in stats["splits"]:
        line = summary_line(split, stats)
        print(line, flush=True)
        events.write("data", line, split=split, **stats["splits"][split])
    drops = {k: v for k, v in stats["dropped"].items() if v}
    if drops:
        text = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in drops.items())
        print(f"dropped rows: {text} (each one is in data/dropped.jsonl)", flush=True)
        events.write("warning", f"dropped rows: {text}", dropped=drops)
    for split, s in stats["splits"].items():
        if s["truncated"]:
            events.write("warning", f"{split}: {s['truncated']} examples longer than max_length were truncated")
    for change, c in stats.get("changed", {}).items():
        if c["rows"]:
            line = f"{c['rows']} rows with {CHANGES[change]} (first: {', '.join(c['first_rows'][:3])})"
            print(line, flush=True)
            events.write("warning", line, **{change: c["rows"]})


def write_report(prepared: Prepared, report_dir: Path) -> None:
    """dropped.jsonl (every dropped row, its reason and its data) and stats.json."""
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / "dropped.jsonl").open("w", encoding="utf-8") as handle:
        for item in sorted(prepared.dropped, key=lambda d: (d["source"], d["row"])):
            handle.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
    (report_dir / "stats.json").write_text(json.dumps(prepared.stats, indent=2) + "\n", encoding="utf-8")
