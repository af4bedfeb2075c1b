"""Row -> example: a conversation, a plain-text prompt and answer (with `data.template`), or raw text.

Columns (nested ones written with dots) are mapped onto the format's fields; role names seen in the
wild are mapped onto the chat template's three roles. Empty or malformed rows are dropped with their
reason; roles that cannot be mapped stop the stage, naming the rows that use them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from ftc.core.data.encode import DataError
from ftc.core.data.load import Item, Source, drop_row
from ftc.core.data.settings import DataSettings

# `[data.roles]` adds to (and overrides) these. ShareGPT uses human/gpt; some sets use bot, model or chatgpt.
DEFAULT_ROLES: dict[str, str] = {
    "system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
    "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}
ROLE_KEYS = ("role", "from")  # keys of a turn's role, tried in order unless data.columns.role is set
CONTENT_KEYS = ("content", "value", "text")


class _Drop(Exception):
    """A row that is dropped, with its reason (one of DROP_REASONS) and what is wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail
        super().__init__(detail)


class _UnknownRole(Exception):
    def __init__(self, role: str) -> None:
        self.role = role
        super().__init__(role)


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
    try:
        value = _field(row, column)
    except _Drop:
        if required:
            raise
        value = None
    if value is None:
        if required:
            raise _Drop("empty", f"{name} ({column!r}) is empty")
        return ""
    value = as_text(value, f"{name} ({column!r})")
    if required and not value.strip():
        raise _Drop("empty", f"{name} ({column!r}) is empty")
    return value


_CHANGED = {"converted": 0, "trimmed": 0}  # in the row being mapped: values made text, turns cut off


def as_text(value: Any, what: str) -> str:
    """A value where text is expected: text as is; a finite number or a boolean converted to its JSON
    spelling (42, 0.5, true) and counted; anything else (a list, an object, NaN, Infinity) drops the row."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        _CHANGED["converted"] += 1
        return json.dumps(value)
    kind = "a non-finite number (NaN or Infinity)" if isinstance(value, float) else f"a {type(value).__name__}"
    raise _Drop("malformed", f"{what} is {kind}, not text")


def _first_key(turn: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for k in keys:
        if k in turn:
            return k
    return None


def chat_turn(turn: Any, number: int, settings: DataSettings, roles: dict[str, str], what: str = "turn") -> dict[str, str]:
    """One turn of a conversation ({"role"/"from": ..., "content"/"value"/"text": ...}, or the keys data.columns
    names) as {"role", "content"}: _Drop when it is malformed or empty, _UnknownRole when its role is not mapped."""
    if not isinstance(turn, dict):
        raise _Drop("malformed", f"{what} {number} is a {type(turn).__name__}, not an object")
    role_key = settings.columns.get("role") or _first_key(turn, ROLE_KEYS)
    content_key = settings.columns.get("content") or _first_key(turn, CONTENT_KEYS)
    if role_key is None or role_key not in turn or content_key is None or content_key not in turn:
        raise _Drop("malformed", f"{what} {number} has no role or content key (keys: {', '.join(map(str, turn))}); "
                    "set data.columns.role and data.columns.content")
    name, content = turn[role_key], turn[content_key]
    role = (roles.get(name) or roles.get(name.lower())) if isinstance(name, str) else None
    if role is None:
        raise _UnknownRole(str(name))
    if content is None:
        raise _Drop("empty", f"{what} {number}'s content is empty")
    return {"role": role, "content": as_text(content, f"{what} {number}'s content")}


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
    if system_column:
        system = _text(row, system_column, "system", required=False)
        if system.strip():
            messages.append({"role": "system", "content": system})
    messages += [chat_turn(turn, number, settings, roles) for number, turn in enumerate(turns, start=1)]
    if not any(m["role"] == "assistant" for m in messages):
        raise _Drop("malformed", "no assistant turn")
    if messages[-1]["role"] != "assistant":  # a question left unanswered: trained up to the last answer
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        messages = messages[: last + 1]
        _CHANGED["trimmed"] += 1
    if any(not m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise _Drop("empty", "an assistant turn is empty")
    return messages


def _prompt_fields(row: dict[str, Any], settings: DataSettings) -> dict[str, str]:
    c = settings.columns
    if settings.format == "instruction":
        values = {"instruction": _text(row, c.get("instruction", "instruction"), "instruction"),
                  "output": _text(row, c.get("output", "output"), "output")}
        for name in ("input", "system"):
            values[name] = _text(row, c.get(name, name), name, required=False)
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

        from ftc.core.sandbox import bounded_environment  # bounded time and output (ftc.core.sandbox)

        env = bounded_environment(undefined=StrictUndefined, keep_trailing_newline=True)
        template = _TEMPLATES[source] = env.from_string(source)
    return str(template.render(**values))


def example_text(example: dict[str, Any]) -> str:
    """The words of an example, for near-duplicate detection."""
    if "messages" in example:
        return "\n".join(m["content"] for m in example["messages"])
    if "prompt" in example:
        return example["prompt"] + "\n" + example["answer"]
    return str(example["text"])


def map_rows(sources: list[Source], index: int, settings: DataSettings, dropped: list[dict[str, Any]],
             rows: Iterable[tuple[int, dict[str, Any]]] | None = None,
             unknown: dict[str, list[int]] | None = None) -> list[Item]:
    """The examples of `sources[index]`, or of `rows` ((number, row) pairs of it: a chunk); its malformed
    and empty rows go to `dropped`. Rows with roles that cannot be mapped stop the stage (`unknown_roles`)
    once the source is mapped; given `unknown`, they are collected there and the caller raises at its end."""
    roles = {**DEFAULT_ROLES, **settings.roles}
    source = sources[index]
    kept: list[Item] = []
    found: dict[str, list[int]] = {} if unknown is None else unknown
    for number, row in (source.numbered() if rows is None else rows):
        _CHANGED.update(converted=0, trimmed=0)
        try:
            kept.append((index, number, to_example(row, settings, roles)))
            for change, count in _CHANGED.items():
                if count:
                    source.changed.setdefault(change, []).append(number)
        except _Drop as drop:
            drop_row(dropped, source, number, drop.reason, drop.detail, row)
        except _UnknownRole as exc:
            found.setdefault(exc.role, []).append(number)
        except Exception as exc:  # noqa: BLE001 - a template error names the row instead of a traceback
            raise DataError(f"{source.label(number)}: data.template cannot render it ({type(exc).__name__}: "
                            f"{exc}); fix the template or the row") from None
    if unknown is None:
        unknown_roles(source, found)
    return kept


def unknown_roles(source: Source, unknown: dict[str, list[int]]) -> None:
    """Stop the stage when rows of `source` use roles that cannot be mapped, naming the rows."""
    if unknown:
        found = "; ".join(f"{role!r} (rows {source.rows_text(numbers)})" for role, numbers in unknown.items())
        example = next(iter(unknown))
        raise DataError(f"{source.name}: roles that cannot be mapped to system/user/assistant: {found}; map them in "
                        f"[data.roles], e.g. {json.dumps(example)} = \"user\"")
