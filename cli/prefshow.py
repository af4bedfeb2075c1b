"""`ftc data` for `format = "preference"`: each pair as the trainer sees it, the prompt masked (dimmed) and
the chosen and rejected answers' trained tokens highlighted, then the stage's counts and drops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftc.core.data.encode import ensure_chat_template
from ftc.core.data.preference import Pair, PreferenceData, prepare_preference
from ftc.core.data.settings import DataSettings

STYLES = {"chosen": "bold green", "rejected": "bold red", "completion": "bold green"}
MASKED_STYLE = "dim"


def run_preference(plan: Any, settings: DataSettings, origin: str, report_dir: Path) -> tuple[PreferenceData, Any]:
    """The preference stage with the plan's settings and the model's tokenizer, as train.py runs it."""
    from ftc.cli.datashow import load_tokenizer

    tokenizer = load_tokenizer(plan["base_model"], origin, plan["revision"], plan["trust_remote_code"])
    ensure_chat_template(tokenizer)
    files = plan["data_kind"] == "files"
    data = prepare_preference(tokenizer, settings, source=plan["data_files"] if files else plan["data_source"],
                              kind=plan["data_loader"] if files else plan["data_kind"], split=plan["data_split"],
                              report_dir=report_dir)
    return data, tokenizer


def render_answer(tokenizer: Any, pair: Pair, answer: str) -> Any:
    """The prompt's tokens dimmed, then the answer's (its trained tokens) in the answer's colour."""
    from rich.text import Text

    from ftc.core.text import printable

    text = Text(printable(tokenizer.decode(pair.tokens["prompt_ids"])), style=MASKED_STYLE)
    text.append(printable(tokenizer.decode(pair.tokens[f"{answer}_ids"])), style=STYLES[answer])
    return text


def show_preference(data: PreferenceData, tokenizer: Any, n: int, console: Any, report_dir: Path) -> None:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    for pair in data.train[:n]:
        for answer in pair.answers:
            label = answer if pair.label is None else f"completion, label {str(pair.label).lower()}"
            title = (f"row {pair.row} ({pair.split}) {label}: {pair.length(answer)} tokens, "
                     f"{len(pair.tokens[f'{answer}_ids'])} trained" + (", truncated" if pair.truncated else ""))
            console.print(Panel(render_answer(tokenizer, pair, answer), title=title, title_align="left"))
    console.print(Text("chosen", style=STYLES["chosen"]) + Text(" / ") + Text("rejected", style=STYLES["rejected"])
                  + Text(" (trained) / ") + Text("prompt (masked)", style=MASKED_STYLE))
    stats = data.stats
    table = Table(title=f"preference data: {stats['rows']} rows read")
    for column in ("split", "examples", "sequences", "tokens", "trained", "share", "truncated", "longest"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, s in stats["splits"].items():
        table.add_row(split, str(s["examples"]), str(s["sequences"]), f"{s['tokens']:,}", f"{s['trained_tokens']:,}",
                      f"{100 * s['trained_share']:.0f} %", str(s["truncated"]), str(s["length"]["max"]))
    console.print(table)
    dropped = {r: c for r, c in stats["dropped"].items() if c}
    for reason, count in dropped.items():
        rows = [str(d["row"]) for d in data.dropped if d["reason"] == reason][:8]
        console.print(f"dropped {count} rows: {reason.replace('_', ' ')} (rows {', '.join(rows)})", markup=False)
    console.print(f"each dropped row, with its reason and data: {report_dir / 'dropped.jsonl'}" if dropped
                  else "dropped rows: none", markup=False)


def preference_json(data: PreferenceData, report_dir: Path) -> str:
    return json.dumps(data.stats | {"report_dir": str(report_dir)}, indent=2)
