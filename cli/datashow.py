"""`ftc data`: the data stage of a spec, run exactly as train.py runs it, shown before training.

Renders examples as the model sees them (trained tokens highlighted, masked tokens dimmed) and
the stage's statistics. Imports transformers (for the tokenizer) but never torch's training stack, and
only when the stage misses the data cache or examples are shown (`--json` from the cache loads neither).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ftc.core.data.encode import DataError, ensure_chat_template
from ftc.core.data.stage import DROP_REASONS, DataSettings, Encoded, Prepared, prepare_sources

TRAINED_STYLE, MASKED_STYLE = "bold green", "dim"


def tokenizer_path(base: str, origin: str) -> str | Path:
    """Where train.py loads the tokenizer from (the bundled model's cache is created on first use, as in a run)."""
    if origin != "bundled":
        return base
    from ftc.core.bundled import model_path

    return model_path(base, log=lambda line: print(line, file=sys.stderr))  # stdout may be --json


def load_tokenizer(base: str, origin: str, revision: str | None, trust_remote_code: bool) -> Any:
    """The tokenizer train.py loads."""
    from transformers import AutoTokenizer

    path = tokenizer_path(base, origin)
    try:
        return AutoTokenizer.from_pretrained(str(path), revision=revision, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for a damaged tokenizer.json
        why = " ".join(str(exc).split())[:200]
        raise DataError(f"the tokenizer of {base} cannot be loaded ({type(exc).__name__}: {why}); repair or "
                        "re-download the model's tokenizer files (tokenizer.json, tokenizer_config.json)") from None


def run_stage(plan: Any, settings: DataSettings, origin: str, report_dir: Path) -> tuple[Prepared, Any]:
    """Load, map, clean, encode and split the plan's data with the plan's DataSettings, as train.py does
    (from the data cache when nothing changed: then a tokenizer in a local directory is not even loaded,
    cache.Deferred). The tokenizer returned may be a Deferred one (cache.loaded gives the tokenizer)."""
    from ftc.core.data.cache import Deferred

    def load() -> Any:
        tokenizer = load_tokenizer(plan["base_model"], origin, plan["revision"], plan["trust_remote_code"])
        if plan["data_format"] != "text" and not plan["template"]:
            ensure_chat_template(tokenizer)
        return tokenizer

    path = Path(tokenizer_path(plan["base_model"], origin)).expanduser()
    tokenizer = Deferred(path, load) if origin != "hub" and path.is_dir() else load()
    files = plan["data_kind"] == "files"
    loader = plan.settings.get("validation_loader")  # only with a validation source
    prepared = prepare_sources(tokenizer, settings, source=plan["data_files"] if files else plan["data_source"],
                               kind=plan["data_loader"] if files else plan["data_kind"], split=plan["data_split"],
                               validation_loader=loader.value if loader else None, mix=plan["mix"],
                               report_dir=report_dir, micro_batch_size=plan["micro_batch_size"],
                               packing=plan["packing"], padding_free=plan["padding_free"])
    return prepared, tokenizer


def render_example(tokenizer: Any, item: Encoded) -> Any:
    """The example's tokens as text: runs of trained tokens highlighted, masked ones dimmed."""
    from rich.text import Text

    from ftc.core.data.cache import loaded
    from ftc.core.text import printable  # the data's own control characters are shown escaped

    tokenizer = loaded(tokenizer)
    text = Text()
    ids, labels = item.encoding["input_ids"], item.encoding["labels"]
    start = 0
    while start < len(ids):
        trained = labels[start] != -100
        end = start
        while end < len(ids) and (labels[end] != -100) == trained:
            end += 1
        text.append(printable(tokenizer.decode(ids[start:end])), style=TRAINED_STYLE if trained else MASKED_STYLE)
        start = end
    return text


def show(prepared: Prepared, tokenizer: Any, n: int, console: Any, report_dir: Path) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    stats = prepared.stats
    if prepared.cached:
        console.print(f"data: read from the data cache ({prepared.cached}); nothing changed", markup=False)
    for item in prepared.train[:n]:
        e = item.encoding
        title = (f"row {item.row} ({item.split}): {len(e['input_ids'])} tokens, {e['trained_tokens']} trained"
                 + (f", truncated from {e['length']}" if e["truncated"] else ""))
        console.print(Panel(render_example(tokenizer, item), title=title, title_align="left"))
    legend = Text("trained", style=TRAINED_STYLE) + Text(" / ") + Text("masked (label -100)", style=MASKED_STYLE)
    console.print(legend)

    table = Table(title=f"data: {stats['rows_read']} rows read")
    for column in ("split", "examples", "tokens", "trained", "share", "truncated"):
        table.add_column(column, justify="left" if column == "split" else "right")
    lengths = Table(title="tokens per example (before truncation)")
    for column in ("split", "p50", "p90", "p95", "p99", "max"):
        lengths.add_column(column, justify="left" if column == "split" else "right")
    for split, s in stats["splits"].items():
        table.add_row(split, str(s["examples"]), f"{s['tokens']:,}", f"{s['trained_tokens']:,}",
                      f"{100 * s['trained_share']:.0f} %", str(s["truncated"]))
        lengths.add_row(split, *(str(s["length"][k]) for k in ("p50", "p90", "p95", "p99", "max")))
    console.print(table)
    console.print(lengths)
    dropped = {r: n for r, n in stats["dropped"].items() if n}
    if dropped:
        drops = Table(title="dropped rows")
        drops.add_column("reason")
        drops.add_column("rows", justify="right")
        drops.add_column("first rows")
        for reason in DROP_REASONS:
            if reason in dropped:
                rows = [str(d["row"]) for d in prepared.dropped if d["reason"] == reason][:8]
                drops.add_row(reason.replace("_", " "), str(dropped[reason]), ", ".join(rows))
        console.print(drops)
        console.print(f"each dropped row, with its reason and data: {report_dir / 'dropped.jsonl'}", markup=False)
    else:
        console.print("dropped rows: none")
    pad = stats["padding"]
    line = (f"padding: {pad['padded_tokens']:,} pad tokens per epoch in micro-batches of {pad['micro_batch_size']} "
            f"({100 * pad['padding_share']:.0f} % of the batch)")
    if "packing" in stats:
        pack = stats["packing"]
        line += (f"; packing fills {pack['packed_rows']} rows of max_length ({pack['examples_per_row']} examples "
                 f"per row) and saves all {pack['padded_tokens_saved']:,} of them")
    if "padding_free" in stats:
        line += "; padding-free batching saves all of them"
    console.print(line, markup=False)
    for name, source in stats.get("sources", {}).items():
        console.print(f"source {name}: {source['rows_read']} rows, {source['train_examples']} training examples "
                      f"x weight {source['weight']:g} = {source['weighted_examples']}", markup=False)
    for split, s in stats["splits"].items():
        if s["truncated"]:
            console.print(f"{split}: {s['truncated']} examples truncated to max_length (rows "
                          f"{', '.join(map(str, s['truncated_rows']))}); raise data.max_length or set "
                          "data.clean.max_tokens to drop them", markup=False)


def stats_json(prepared: Prepared, report_dir: Path) -> str:
    return json.dumps(prepared.stats | {"report_dir": str(report_dir)}, indent=2)
