"""The data stage of `format = "preference"`: rows -> pairs (prompt, chosen, rejected) or KTO's unpaired
(prompt, completion, label), rendered with the chat template, checked, split, counted.

TRL's preference trainers tokenize their own text columns; this module gives them text they tokenize
exactly as `tokens` does here (TRL's rule: the prompt alone, prompt + completion, the completion starts
where the two diverge, truncated to max_length keeping the start), so what `ftc data` shows as trained
is what trains (tests/test_preference.py compares the two token for token).

A prompt is text (one user turn) or a list of chat turns; chosen, rejected and completion are text or an
assistant turn ({"role": "assistant", "content": ...}) or a list ending in one. Rows whose chosen equals
their rejected teach nothing and are dropped (`same_answers`). Torch-free, like the rest of the stage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.core.data.encode import DataError
from ftc.core.data.load import Source, drop_row, load_rows, rows_list
from ftc.core.data.mapping import DEFAULT_ROLES, _Drop, _field, _UnknownRole, _text, as_text, chat_turn, unknown_roles
from ftc.core.data.settings import DataSettings
from ftc.core.data.split import hold_out


@dataclass
class Pair:
    """One kept row: the rendered texts TRL trains on, their tokens, and the prompt's turns."""

    row: int
    messages: list[dict[str, str]]
    prompt: str
    answers: dict[str, str]
    """"chosen" and "rejected", or "completion" (KTO rows); each ends with the end-of-turn token."""
    label: bool | None = None
    tokens: dict[str, list[int]] = field(default_factory=dict)
    """prompt_ids and <answer>_ids, as TRL builds them; each answer's ids are its trained tokens."""
    truncated: bool = False
    split: str = "train"

    def length(self, answer: str) -> int:
        return len(self.tokens["prompt_ids"]) + len(self.tokens[f"{answer}_ids"])


def _turn_text(value: Any, what: str) -> str:
    """An answer: text, an assistant turn, or a list of turns whose last is the assistant's."""
    if isinstance(value, list) and value:
        value = value[-1]
    if isinstance(value, dict):
        value = value.get("content", value.get("value"))
    if value is None:
        raise _Drop("empty", f"{what} is empty")
    text = as_text(value, what)
    if not text.strip():
        raise _Drop("empty", f"{what} is empty")
    return text


def _prompt_turns(row: dict[str, Any], settings: DataSettings) -> list[dict[str, str]]:
    c = settings.columns
    value = _field(row, c.get("prompt", "prompt"))
    turns: list[dict[str, str]] = []
    if (system_column := c.get("system")) and (system := _text(row, system_column, "system", required=False)).strip():
        turns.append({"role": "system", "content": system})
    if isinstance(value, list):
        roles = DEFAULT_ROLES | settings.roles
        turns += [chat_turn(turn, number, settings, roles, "prompt turn") for number, turn in enumerate(value, start=1)]
    else:
        text = as_text(value, "prompt") if value is not None else ""
        if not text.strip():
            raise _Drop("empty", "the prompt is empty")
        turns.append({"role": "user", "content": text})
    return turns


def _answers(row: dict[str, Any], settings: DataSettings) -> tuple[dict[str, Any], bool | None]:
    c = settings.columns
    names = {name: c.get(name, name) for name in ("chosen", "rejected", "completion", "label")}
    present = {name for name, column in names.items() if _has(row, column)}
    if {"chosen", "rejected"} <= present:
        return {n: _field(row, names[n]) for n in ("chosen", "rejected")}, None
    if {"completion", "label"} <= present:
        label = _field(row, names["label"])
        if not isinstance(label, bool):
            raise _Drop("malformed", f"label ({names['label']!r}) is {label!r}, not true or false")
        return {"completion": _field(row, names["completion"])}, label
    raise _Drop("malformed", f"neither chosen and rejected ({names['chosen']!r}, {names['rejected']!r}) nor "
                f"completion and label ({names['completion']!r}, {names['label']!r}) are in the row")


def _has(row: dict[str, Any], column: str) -> bool:
    try:
        _field(row, column)
    except _Drop:
        return False
    return True


def render(tokenizer: Any, messages: list[dict[str, str]], answer: str) -> tuple[str, str]:
    """(prompt text with the generation prompt, the answer's text up to and including its end of turn)."""
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if not full.startswith(prompt):
        raise _Drop("malformed", "the chat template renders the prompt differently before an answer")
    rest, eos = full[len(prompt):], tokenizer.eos_token or ""
    cut = rest.rfind(eos) if eos else -1
    return prompt, (rest[: cut + len(eos)] if cut >= 0 else rest + eos)  # TRL would add EOS otherwise


def _common(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def tokens(tokenizer: Any, pair: Pair, max_length: int) -> None:
    """prompt_ids and each answer's ids by TRL's rule (DPOTrainer/KTOTrainer tokenize_fn), then truncated to
    max_length keeping the start, as TRL's collators do."""
    prompt_ids = list(tokenizer(pair.prompt)["input_ids"])
    whole = {name: list(tokenizer(pair.prompt + text)["input_ids"]) for name, text in pair.answers.items()}
    start = min([len(prompt_ids)] + [_common(prompt_ids, ids) for ids in whole.values()])
    pair.tokens = {"prompt_ids": prompt_ids[:start]}
    for name, ids in whole.items():
        room = max(max_length - start, 0)
        pair.truncated |= len(ids) - start > room
        pair.tokens[f"{name}_ids"] = ids[start:][:room]


def to_pair(tokenizer: Any, row: dict[str, Any], number: int, settings: DataSettings) -> Pair:
    messages = _prompt_turns(row, settings)
    answers, label = _answers(row, settings)
    texts = {name: _turn_text(value, name) for name, value in answers.items()}
    if label is None and texts["chosen"].strip() == texts["rejected"].strip():
        raise _Drop("same_answers", "chosen equals rejected: the pair prefers nothing")
    rendered = {name: render(tokenizer, messages, text) for name, text in texts.items()}
    pair = Pair(number, messages, next(iter(rendered.values()))[0], {n: r[1] for n, r in rendered.items()}, label)
    tokens(tokenizer, pair, settings.max_length)
    if (start := len(pair.tokens["prompt_ids"])) >= settings.max_length:
        raise _Drop("untrained", f"the prompt alone is {start} tokens, max_length {settings.max_length}: no "
                    "answer token is left (TRL drops such rows)")
    return pair


@dataclass
class PreferenceData:
    """The outcome of the preference stage (what `Prepared` is for the other formats)."""

    train: list[Pair]
    validation: list[Pair]
    dropped: list[dict[str, Any]]
    stats: dict[str, Any]
    cached: str | None = None

    def dataset(self, split: str) -> Any:
        """The split as a `datasets.Dataset` of the text columns TRL's trainer reads (None when empty)."""
        from datasets import Dataset

        pairs = self.train if split == "train" else self.validation
        if not pairs:
            return None
        columns: dict[str, list[Any]] = {"prompt": [p.prompt for p in pairs]}
        for name in pairs[0].answers:
            columns[name] = [p.answers[name] for p in pairs]
        if pairs[0].label is not None:
            columns["label"] = [p.label for p in pairs]
        return Dataset.from_dict(columns)

    def conversations(self, split: str = "validation") -> list[list[dict[str, str]]]:
        """Each pair's prompt turns with its chosen answer (for before/after answers)."""
        pairs = self.train if split == "train" else self.validation
        return [p.messages + [{"role": "assistant", "content": p.answers.get("chosen", "")}] for p in pairs]


def _split_stats(pairs: list[Pair]) -> dict[str, Any]:
    lengths = sorted(p.length(a) for p in pairs for a in p.answers)
    trained = sum(len(p.tokens[f"{a}_ids"]) for p in pairs for a in p.answers)
    total = sum(lengths)
    return {"examples": len(pairs), "sequences": len(lengths), "tokens": total, "trained_tokens": trained,
            "trained_share": trained / total if total else 0.0, "truncated": sum(p.truncated for p in pairs),
            "length": {"max": lengths[-1] if lengths else 0,
                       "mean": round(total / len(lengths), 1) if lengths else 0}}


def prepare_preference(tokenizer: Any, settings: DataSettings, *, source: str, kind: str | None,
                       split: str = "train", report_dir: Path | None = None, rows: Any = None) -> PreferenceData:
    """Read, map, check, dedup and split preference rows; write dropped.jsonl and stats.json to report_dir."""
    src = Source(source, rows_list(rows if rows is not None else load_rows(source, kind, split=split)))
    dropped: list[dict[str, Any]] = []
    kept: list[Pair] = []
    seen: set[str] = set()
    unknown: dict[str, list[int]] = {}
    for number, row in enumerate(src.rows, start=1):
        try:
            pair = to_pair(tokenizer, row, number, settings)
            key = json.dumps([pair.prompt, pair.answers, pair.label], sort_keys=True)
            if settings.dedup and key in seen:
                raise _Drop("duplicate", "the same prompt and answers as an earlier row")
        except _Drop as drop:
            drop_row(dropped, src, number, drop.reason, drop.detail)
            continue
        except _UnknownRole as exc:
            unknown.setdefault(exc.role, []).append(number)
            continue
        seen.add(key)
        kept.append(pair)
    unknown_roles(src, unknown)
    if not kept:
        first = f"; first problem, row {dropped[0]['row']}: {dropped[0]['detail']}" if dropped else ""
        raise DataError(f"{source}: no preference pair is left to train on ({len(src.rows)} rows read){first}")
    train, validation = hold_out(kept, settings, source)  # type: ignore[arg-type]
    for pair in validation:
        pair.split = "validation"
    reasons = ("malformed", "empty", "duplicate", "same_answers", "untrained")
    stats = {"rows": len(src.rows), "splits": {"train": _split_stats(train)},
             "dropped": {r: sum(d["reason"] == r for d in dropped) for r in reasons}}
    if validation:
        stats["splits"]["validation"] = _split_stats(validation)
    data = PreferenceData(train, validation, dropped, stats)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        with (report_dir / "dropped.jsonl").open("w", encoding="utf-8") as handle:
            for item in dropped:
                handle.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
        (report_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return data


def report_preference(data: PreferenceData, events: Any) -> None:
    """Print and record the stage's counts: pairs, sequences (two per pair), trained tokens, drops."""
    for split, s in data.stats["splits"].items():
        line = (f"{split}: {s['examples']} preference examples ({s['sequences']} sequences), {s['tokens']:,} tokens, "
                f"{s['trained_tokens']:,} trained ({100 * s['trained_share']:.0f} %), {s['truncated']} truncated, "
                f"longest {s['length']['max']} tokens")
        print(line, flush=True)
        events.write("data", line, split=split, **s)
    drops = {k: v for k, v in data.stats["dropped"].items() if v}
    if drops:
        text = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in drops.items())
        print(f"dropped rows: {text} (each one is in data/dropped.jsonl)", flush=True)
        events.write("warning", f"dropped rows: {text}", dropped=drops)
