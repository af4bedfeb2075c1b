"""The data stage: rows -> examples -> cleaned -> encoded -> split, with every drop accounted for.

`train.py` and `ftc data` both call `prepare_data`, so what `ftc data` shows is what trains.
Steps, in order (each drop is counted by reason and written to `dropped.jsonl`):

1. map each row onto the format (`to_example`): a conversation, a plain-text prompt and answer
   (with `data.template`), or raw text; empty or malformed rows are dropped; roles that cannot be
   mapped stop the stage with the rows that use them;
2. exact duplicates (same example after mapping) and, when asked, near duplicates (clean.py:
   MinHash over character 5-grams, confirmed by their exact Jaccard similarity) are dropped, the
   first one kept;
3. examples are encoded (`data.py`), length filters applied, and examples with no trained token
   reported (an error by default, naming the rows);
4. the held-out share is split off with the run's seed.

Torch-free; `datasets` is imported only to load rows and to hand the result to the trainer.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.core.data.clean import near_duplicates
from ftc.core.data.encode import DataError, encode_chat, encode_prompt, encode_text

# Role names seen in the wild, mapped onto the chat template's three roles. `[data.roles]` adds to
# (and overrides) these. ShareGPT uses human/gpt; some sets use bot, model or chatgpt.
DEFAULT_ROLES: dict[str, str] = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}
ROLE_KEYS = ("role", "from")  # keys of a turn's role, tried in order unless data.columns.role is set
CONTENT_KEYS = ("content", "value", "text")
DROP_REASONS = ("malformed", "empty", "duplicate", "near_duplicate", "too_short", "too_long", "untrained",
                "in_training_data")


@dataclass(frozen=True)
class DataSettings:
    """How rows become training examples; train.py builds it from its CONFIG block, `ftc data` from the plan."""

    format: str
    columns: dict[str, str]
    max_length: int
    roles: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    train_on: str = "answers"
    validation: float | str = 0.0
    seed: int = 42
    dedup: bool = True
    near_dedup: float | None = None
    min_tokens: int = 0
    max_tokens: int | None = None
    untrained: str = "error"


class _Drop(Exception):
    """A row that is dropped, with its reason (one of DROP_REASONS) and what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(detail)


class _UnknownRole(Exception):
    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__(role)


# ------------------------------------------------------------------------------------ loading

def load_rows(source: str, kind: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a source: `kind` is json/csv/parquet (files or a glob), saved (save_to_disk) or hub."""
    import datasets

    datasets.disable_progress_bars()
    try:
        if kind == "saved":
            rows = datasets.load_from_disk(source)
            if isinstance(rows, datasets.DatasetDict):
                if split not in rows:
                    raise DataError(f"{source}: no split {split!r} (splits: {', '.join(rows)}); set data.split")
                rows = rows[split]
        elif kind == "hub":
            rows = datasets.load_dataset(source, split=split)
        else:
            rows = datasets.load_dataset(kind, data_files=source, split="train")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot read"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}: cannot be read as {kind} data ({type(exc).__name__}: {message}); check the "
                        "file's format and encoding (UTF-8)") from None
    return list(rows.to_list())


# ------------------------------------------------------------------------------------ mapping

def _field(row: dict[str, Any], column: str) -> Any:
    """A column, or a nested field written with dots (`meta.question`); _Drop when absent."""
    if column in row:
        return row[column]
    value: Any = row
    for part in column.split("."):
        if not isinstance(value, dict) or part not in value:
            raise _Drop("malformed", f"no field {column!r}")
        value = value[part]
    return value


def _text(row: dict[str, Any], column: str, name: str, required: bool = True) -> str:
    value = _field(row, column) if required or _has(row, column) else None
    if value is None:
        if required:
            raise _Drop("empty", f"{name} ({column!r}) is empty")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Drop("malformed", f"{name} ({column!r}) is a {type(value).__name__}, not text")
    if required and not value.strip():
        raise _Drop("empty", f"{name} ({column!r}) is empty")
    return value


def _has(row: dict[str, Any], column: str) -> bool:
    try:
        _field(row, column)
    except _Drop:
        return False
    return True


def _turns(row: dict[str, Any], settings: DataSettings, roles: dict[str, str]) -> list[dict[str, str]]:
    column = settings.columns.get("messages", "messages")
    turns = _field(row, column)
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)  # CSV cells hold conversations as JSON text
        except json.JSONDecodeError:
            raise _Drop("malformed", f"{column!r} is text, not a list of turns") from None
    if not isinstance(turns, list) or not turns:
        raise _Drop("empty" if turns in (None, [], "") else "malformed",
                    f"{column!r} is not a non-empty list of turns (got {type(turns).__name__})")
    messages = []
    system_column = settings.columns.get("system")
    if system_column and _has(row, system_column):
        system = _text(row, system_column, "system", required=False)
        if system.strip():
            messages.append({"role": "system", "content": system})
    for number, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict):
            raise _Drop("malformed", f"turn {number} is a {type(turn).__name__}, not an object")
        role_key = settings.columns.get("role") or next((k for k in ROLE_KEYS if k in turn), None)
        content_key = settings.columns.get("content") or next((k for k in CONTENT_KEYS if k in turn), None)
        if role_key is None or role_key not in turn or content_key is None or content_key not in turn:
            raise _Drop("malformed", f"turn {number} has no role or content key (keys: {', '.join(turn)}); "
                        "set data.columns.role and data.columns.content")
        name, content = turn[role_key], turn[content_key]
        role = roles.get(name) if isinstance(name, str) else None
        if role is None and isinstance(name, str):
            role = roles.get(name.lower())
        if role is None:
            raise _UnknownRole(str(name))
        if not isinstance(content, str):
            raise _Drop("malformed", f"turn {number}'s content is a {type(content).__name__}, not text")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise _Drop("malformed", "no assistant turn")
    if messages[-1]["role"] != "assistant":
        raise _Drop("malformed", "the conversation does not end with an assistant turn")
    if any(not m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise _Drop("empty", "an assistant turn is empty")
    return messages


def _prompt_fields(row: dict[str, Any], settings: DataSettings) -> dict[str, str]:
    c = settings.columns
    if settings.format == "instruction":
        values = {"instruction": _text(row, c.get("instruction", "instruction"), "instruction"),
                  "output": _text(row, c.get("output", "output"), "output")}
        for name in ("input", "system"):
            column = c.get(name, name)
            values[name] = _text(row, column, name, required=False) if _has(row, column) else ""
        return values
    return {"prompt": _text(row, c.get("prompt", "prompt"), "prompt"),
            "completion": _text(row, c.get("completion", "completion"), "completion")}


def to_example(row: dict[str, Any], settings: DataSettings, roles: dict[str, str] | None = None) -> dict[str, Any]:
    """One row as `{"messages": [...]}`, `{"prompt": ..., "answer": ...}` (data.template) or `{"text": ...}`."""
    roles = roles if roles is not None else {**DEFAULT_ROLES, **settings.roles}
    fmt = settings.format
    if fmt == "text":
        return {"text": _text(row, settings.columns.get("text", "text"), "text")}
    if fmt == "chat":
        return {"messages": _turns(row, settings, roles)}
    values = _prompt_fields(row, settings)
    if settings.template is not None:
        answer = values.pop("output" if fmt == "instruction" else "completion")
        return {"prompt": _render_template(settings.template, values), "answer": answer}
    if fmt == "completion":
        return {"messages": [{"role": "user", "content": values["prompt"]},
                             {"role": "assistant", "content": values["completion"]}]}
    user = values["instruction"] + ("\n\n" + values["input"] if values["input"].strip() else "")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": values["output"]}]
    if values["system"].strip():
        messages.insert(0, {"role": "system", "content": values["system"]})
    return {"messages": messages}


_TEMPLATES: dict[str, Any] = {}


def _render_template(source: str, values: dict[str, str]) -> str:
    template = _TEMPLATES.get(source)
    if template is None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        template = _TEMPLATES[source] = env.from_string(source)
    return str(template.render(**values))


def encode_example(tokenizer: Any, example: dict[str, Any], settings: DataSettings) -> dict[str, Any]:
    """input_ids, labels and counts of one example (see data.py for the masking)."""
    if "messages" in example:
        return encode_chat(tokenizer, example["messages"], settings.max_length, settings.train_on)
    if "prompt" in example:
        return encode_prompt(tokenizer, example["prompt"], example["answer"], settings.max_length, settings.train_on)
    return encode_text(tokenizer, example["text"], settings.max_length)


def example_text(example: dict[str, Any]) -> str:
    """The words of an example, for near-duplicate detection."""
    if "messages" in example:
        return "\n".join(m["content"] for m in example["messages"])
    if "prompt" in example:
        return example["prompt"] + "\n" + example["answer"]
    return str(example["text"])


# ------------------------------------------------------------------------------------ the stage

@dataclass
class Encoded:
    """One kept example: its source, row number there (1-based), split, example and encoding."""

    row: int
    example: dict[str, Any]
    encoding: dict[str, Any]
    split: str = "train"
    source: str = ""


@dataclass
class Prepared:
    """The outcome of the data stage. `train` holds each kept example once; `weighted_train` is
    what trains (mixed sources repeated or subsampled by their weights)."""

    train: list[Encoded]
    validation: list[Encoded]
    dropped: list[dict[str, Any]]
    stats: dict[str, Any]
    weighted_train: list[Encoded] = field(default_factory=list)

    def dataset(self, split: str) -> Any:
        """The split as a `datasets.Dataset` of input_ids and labels (None when empty)."""
        from datasets import Dataset

        items = (self.weighted_train or self.train) if split == "train" else self.validation
        if not items:
            return None
        return Dataset.from_dict({"input_ids": [e.encoding["input_ids"] for e in items],
                                  "labels": [e.encoding["labels"] for e in items]})

    def conversations(self, split: str = "validation") -> list[list[dict[str, str]]]:
        """The split's conversations (for before/after answers)."""
        items = self.train if split == "train" else self.validation
        return [e.example["messages"] for e in items if "messages" in e.example]


@dataclass
class _Source:
    name: str
    rows: list[dict[str, Any]]
    weight: float = 1.0


_Item = tuple[int, int, dict[str, Any]]  # (source index, row number, example)


def _rows_list(rows: Iterable[dict[str, Any]] | Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_list"):
        return list(rows.to_list())
    return list(rows)


def _drop(dropped: list[dict[str, Any]], source: _Source, number: int, reason: str, detail: str) -> None:
    dropped.append({"source": source.name, "row": number, "reason": reason, "detail": detail,
                    "data": source.rows[number - 1]})


def _map_rows(sources: list[_Source], index: int, settings: DataSettings, dropped: list[dict[str, Any]]) -> list[_Item]:
    roles = {**DEFAULT_ROLES, **settings.roles}
    source = sources[index]
    kept: list[_Item] = []
    unknown: dict[str, list[int]] = {}
    for number, row in enumerate(source.rows, start=1):
        try:
            kept.append((index, number, to_example(row, settings, roles)))
        except _Drop as drop:
            _drop(dropped, source, number, drop.reason, drop.detail)
        except _UnknownRole as exc:
            unknown.setdefault(exc.role, []).append(number)
        except Exception as exc:  # noqa: BLE001 - a template error names the row instead of a traceback
            raise DataError(f"{source.name}, row {number}: data.template cannot render it ({type(exc).__name__}: "
                            f"{exc}); fix the template or the row") from None
    if unknown:
        found = "; ".join(f"{role!r} (rows {_rows_text(numbers)})" for role, numbers in unknown.items())
        example = next(iter(unknown))
        raise DataError(f"{source.name}: roles that cannot be mapped to system/user/assistant: {found}; map them in "
                        f"[data.roles], e.g. {json.dumps(example)} = \"user\"")
    return kept


def _rows_text(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _key(example: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _where(sources: list[_Source], index: int, number: int, of: int) -> str:
    return f"row {number}" if index == of else f"{sources[index].name} row {number}"


def _dedup(items: list[_Item], settings: DataSettings, sources: list[_Source], dropped: list[dict[str, Any]],
           seen: dict[str, tuple[int, int]] | None = None) -> list[_Item]:
    """Exact duplicates (and near ones when asked) after the first; `seen`: examples of another split,
    whose repeats are dropped whatever the settings (validation rows that are also training rows)."""
    kept: list[_Item] = []
    first: dict[str, tuple[int, int]] = {}
    for index, number, example in items:
        key = _key(example)
        if seen is not None and key in seen:
            _drop(dropped, sources[index], number, "in_training_data",
                  f"the same example is training {_where(sources, *seen[key], of=-1)}")
        elif settings.dedup and key in first:
            _drop(dropped, sources[index], number, "duplicate",
                  f"the same example as {_where(sources, *first[key], of=index)}")
        else:
            first.setdefault(key, (index, number))
            kept.append((index, number, example))
    if settings.near_dedup is not None and len(kept) > 1:
        repeats = near_duplicates([example_text(e) for _, _, e in kept], settings.near_dedup)
        for position, (earlier, similarity) in sorted(repeats.items()):
            index, number, _ = kept[position]
            _drop(dropped, sources[index], number, "near_duplicate",
                  f"{similarity:.2f} similar to {_where(sources, *kept[earlier][:2], of=index)}")
        kept = [item for position, item in enumerate(kept) if position not in repeats]
    return kept


def _encode_all(tokenizer: Any, items: list[_Item], settings: DataSettings, sources: list[_Source],
                dropped: list[dict[str, Any]]) -> list[Encoded]:
    kept: list[Encoded] = []
    untrained: dict[str, list[int]] = {}
    for index, number, example in items:
        source = sources[index]
        try:
            encoding = encode_example(tokenizer, example, settings)
        except DataError as exc:
            raise DataError(f"{source.name}, row {number}: {exc}") from None
        if encoding["length"] < settings.min_tokens:
            _drop(dropped, source, number, "too_short",
                  f"{encoding['length']} tokens < data.clean.min_tokens = {settings.min_tokens}")
        elif settings.max_tokens is not None and encoding["length"] > settings.max_tokens:
            _drop(dropped, source, number, "too_long",
                  f"{encoding['length']} tokens > data.clean.max_tokens = {settings.max_tokens}")
        elif encoding["trained_tokens"] == 0:
            untrained.setdefault(source.name, []).append(number)
            _drop(dropped, source, number, "untrained", "no trained token (the answer was truncated away or is empty)")
        else:
            kept.append(Encoded(number, example, encoding, source=source.name))
    if untrained and settings.untrained == "error":
        where = "; ".join(f"{name}: {len(rows)} example(s) with no trained token (rows {_rows_text(rows)})"
                          for name, rows in untrained.items())
        raise DataError(f"{where}: the answer was truncated away or is empty; raise data.max_length, or set "
                        "data.clean.untrained = \"drop\" to drop them")
    return kept


def _weighted(train: list[Encoded], weights: dict[str, float], seed: int) -> list[Encoded]:
    """Each source's training examples `weight` times: whole copies, then a seeded share of the rest."""
    rng = random.Random(seed)
    out: list[Encoded] = []
    for name, weight in weights.items():
        mine = [e for e in train if e.source == name]
        whole, part = int(weight), weight - int(weight)
        out += mine * whole
        if part:
            out += rng.sample(mine, round(part * len(mine)))
    return out


def prepare_data(rows: Any, tokenizer: Any, settings: DataSettings, *, source: str = "data",
                 validation_rows: Any = None, validation_source: str = "validation",
                 mix: Sequence[tuple[str, Any, float]] = (), report_dir: Path | None = None,
                 micro_batch_size: int = 1, packing: bool = False, padding_free: bool = False) -> Prepared:
    """Map, clean, encode and split `rows` (and the `mix` sources: (name, rows, weight)); write
    dropped.jsonl and stats.json to `report_dir`."""
    dropped: list[dict[str, Any]] = []
    sources = [_Source(source, _rows_list(rows))] + [_Source(name, _rows_list(r), w) for name, r, w in mix]
    if len({s.name for s in sources}) < len(sources):
        raise DataError(f"the same source is listed twice ({', '.join(s.name for s in sources)}); use weight "
                        "to repeat a source")
    items = [item for index in range(len(sources)) for item in _map_rows(sources, index, settings, dropped)]
    items = _dedup(items, settings, sources, dropped)
    encoded = _encode_all(tokenizer, items, settings, sources, dropped)
    rows_read = sum(len(s.rows) for s in sources)
    if not encoded:
        reasons = Counter(d["reason"] for d in dropped)
        raise DataError(f"{source}: no example is left to train on ({rows_read} rows read; dropped: "
                        + (", ".join(f"{n} {r}" for r, n in reasons.items()) or "none") + ")"
                        + (f"; first problem, row {dropped[0]['row']}: {dropped[0]['detail']}" if dropped else ""))
    validation: list[Encoded] = []
    if isinstance(settings.validation, str) or validation_rows is not None:
        held = _Source(validation_source, _rows_list(validation_rows if validation_rows is not None else []))
        everything = sources + [held]
        seen = {_key(e.example): (next(i for i, s in enumerate(sources) if s.name == e.source), e.row)
                for e in encoded}
        v_items = _map_rows(everything, len(sources), settings, dropped)
        v_items = _dedup(v_items, settings, everything, dropped, seen=seen)
        validation = _encode_all(tokenizer, v_items, settings, everything, dropped)
        if not validation:
            raise DataError(f"{validation_source}: no validation example is left ({len(held.rows)} rows read; the "
                            "rest were dropped or are also training rows); use other rows for data.validation")
        rows_read += len(held.rows)
        train = encoded
    elif settings.validation:
        order = list(range(len(encoded)))
        random.Random(settings.seed).shuffle(order)
        count = math.ceil(len(encoded) * float(settings.validation))
        if count >= len(encoded):
            raise DataError(f"{source}: {len(encoded)} example(s) left after cleaning; too few to hold "
                            f"{settings.validation:.0%} out for validation; add rows or lower data.validation")
        held_out = set(order[:count])
        train = [e for i, e in enumerate(encoded) if i not in held_out]
        validation = [e for i, e in enumerate(encoded) if i in held_out]
    else:
        train = encoded
    for item in validation:
        item.split = "validation"
    weighted = _weighted(train, {s.name: s.weight for s in sources}, settings.seed) if mix else []
    stats = statistics(weighted or train, validation, dropped, rows_read, settings, micro_batch_size, packing,
                       padding_free)
    if mix:
        stats["sources"] = {s.name: {"rows_read": len(s.rows), "weight": s.weight,
                                     "train_examples": sum(1 for e in train if e.source == s.name),
                                     "weighted_examples": sum(1 for e in weighted if e.source == s.name)}
                            for s in sources}
    prepared = Prepared(train, validation, dropped, stats, weighted)
    if report_dir is not None:
        write_report(prepared, Path(report_dir))
    return prepared


def write_report(prepared: Prepared, report_dir: Path) -> None:
    """dropped.jsonl (every dropped row, its reason and its data) and stats.json."""
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / "dropped.jsonl").open("w", encoding="utf-8") as handle:
        for item in sorted(prepared.dropped, key=lambda d: (d["source"], d["row"])):
            handle.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
    (report_dir / "stats.json").write_text(json.dumps(prepared.stats, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------ statistics

def percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of sorted values (0 when empty)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return int(sorted_values[rank - 1])


def _split_stats(items: list[Encoded]) -> dict[str, Any]:
    lengths = sorted(len(e.encoding["input_ids"]) for e in items)
    full = sorted(e.encoding["length"] for e in items)
    tokens = sum(lengths)
    trained = sum(e.encoding["trained_tokens"] for e in items)
    return {
        "examples": len(items),
        "tokens": tokens,
        "trained_tokens": trained,
        "trained_share": round(trained / tokens, 4) if tokens else 0.0,
        "truncated": sum(1 for e in items if e.encoding["truncated"]),
        "truncated_rows": [e.row for e in items if e.encoding["truncated"]][:20],
        "length": {f"p{q}": percentile(full, q) for q in (50, 90, 95, 99)} | {"max": full[-1] if full else 0},
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


def statistics(train: list[Encoded], validation: list[Encoded], dropped: list[dict[str, Any]], rows_read: int,
               settings: DataSettings, micro_batch_size: int, packing: bool,
               padding_free: bool = False) -> dict[str, Any]:
    """The numbers `ftc data --json` prints and train.py reports in its `data` event."""
    reasons = Counter(d["reason"] for d in dropped)
    lengths = [len(e.encoding["input_ids"]) for e in train]
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


def summary_line(split: str, stats: dict[str, Any]) -> str:
    """One line per split for the log."""
    s = stats["splits"][split]
    return (f"{split}: {s['examples']} examples, {s['tokens']:,} tokens, {s['trained_tokens']:,} trained "
            f"({100 * s['trained_share']:.0f} %), {s['truncated']} truncated, longest {s['length']['max']} tokens")


def report(prepared: Prepared, events: Any) -> None:
    """Print and record the stage's counts (the `data` event) and warnings about truncation and drops."""
    stats = prepared.stats
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


def check_saved_tokenizer(path: Path, prepared: Prepared, settings: DataSettings, events: Any) -> bool:
    """Encode the first training example with the tokenizer saved beside the model and compare it
    with what was trained; a difference (another chat template, special tokens) is a warning event."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(path))
    item = prepared.train[0]
    try:
        again: dict[str, Any] | None = encode_example(saved, item.example, settings)
    except DataError:  # the saved template cannot even locate the answers
        again = None
    same = again is not None and again["input_ids"] == item.encoding["input_ids"] and again[
        "labels"] == item.encoding["labels"]
    if same and again is not None:
        print(f"saved tokenizer check: training row {item.row} encodes to the same {len(again['input_ids'])} "
              f"tokens with {path}", flush=True)
    else:
        events.write("warning", f"the tokenizer saved in {path} encodes training row {item.row} differently from "
                     "training (chat template or special tokens differ); inference will not see what was trained")
    return same
