"""Guess a dataset's format and column mapping from its column names and its first rows, for `ftc init`.

Pure: rows in, a `Guess` out, every decision with the reason `ftc init` prints. The order of the
rules: a column of conversations (OpenAI messages, ShareGPT conversations) -> chat; a prompt and
chosen/rejected -> preference, trained with DPO (chosen/rejected without a prompt column: supervised
fine-tuning on the chosen answers, the preference format needing its prompt column); an
instruction and an output column -> instruction (Alpaca); a prompt-like and an answer-like column
(question/answer, query/response, src/tgt, ...) -> completion; one text column -> text; otherwise
the first two text columns by position -> completion (said so, to be checked).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ftc.core.data.mapping import CONTENT_KEYS, DEFAULT_ROLES, ROLE_KEYS

# Column names seen in public datasets, most common first; matched after lower-casing and dropping
# separators ("Question", "question_" and "QUESTION" all match "question").
CHAT_NAMES = ("messages", "conversations", "conversation", "chat", "dialog", "dialogue", "turns", "items")
INSTRUCTION_NAMES = ("instruction", "instructions", "instruct", "task")
INPUT_NAMES = ("input", "context", "inputs")
PROMPT_NAMES = ("prompt", "question", "query", "input", "src", "source", "inputs", "instruction", "q", "request",
                "context", "sentence", "text_input", "user", "human", "problem", "x")
ANSWER_NAMES = ("completion", "answer", "response", "output", "tgt", "target", "reply", "outputs", "a",
                "solution", "label", "assistant", "gpt", "y", "chosen")
TEXT_NAMES = ("text", "content", "document", "body", "passage", "story", "article")
SYSTEM_NAMES = ("system", "system_prompt", "systemprompt")
# Role names mapped beyond the data stage's own DEFAULT_ROLES (which `[data.roles]` extends).
EXTRA_ROLES = {"prompter": "user", "question": "user", "customer": "user", "response": "assistant",
               "answer": "assistant", "agent": "assistant", "ai": "assistant", "bard": "assistant",
               "developer": "system"}


@dataclass
class Guess:
    """What `ftc init` writes into `[data]`, and why."""

    format: str
    columns: dict[str, str] = field(default_factory=dict)
    """Format field -> dataset column, only where they differ."""
    roles: dict[str, str] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    kind: str = ""
    """What the data looks like in words ("OpenAI messages", "ShareGPT", "Alpaca", ...)."""
    objective: str = ""
    """train.objective when not supervised fine-tuning ("dpo" for preference pairs)."""


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _find(columns: Sequence[str], names: Sequence[str], exclude: Sequence[str] = ()) -> str | None:
    """The first column whose normalised name is one of `names` (in the names' order)."""
    by_norm = {_norm(c): c for c in columns if c not in exclude}
    for name in names:
        if _norm(name) in by_norm:
            return by_norm[_norm(name)]
    return None


def _values(rows: Sequence[dict[str, Any]], column: str) -> list[Any]:
    return [row[column] for row in rows if isinstance(row, dict) and row.get(column) is not None]


def _is_conversation(value: Any) -> bool:
    return (isinstance(value, list) and bool(value) and all(isinstance(t, dict) for t in value)
            and any(k in value[0] for k in ROLE_KEYS) and any(k in value[0] for k in CONTENT_KEYS))


def _text_columns(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    """Columns whose values are strings in most sampled rows."""
    out = []
    for column in columns:
        values = _values(rows, column)
        if values and sum(isinstance(v, str) for v in values) >= 0.8 * len(values):
            out.append(column)
    return out


def _conversation_column(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str | None:
    candidates = [c for c in columns if (values := _values(rows, c)) and sum(map(_is_conversation, values))
                  >= 0.8 * len(values)]
    return _find(candidates, CHAT_NAMES) or (candidates[0] if candidates else None)


def _roles(rows: Sequence[dict[str, Any]], column: str) -> tuple[str, dict[str, str], list[str]]:
    """(style, extra role mapping, role names that could not be mapped) of a conversation column."""
    seen: dict[str, None] = {}
    style = "OpenAI messages (role/content)"
    for value in _values(rows, column):
        for turn in value:
            key = next((k for k in ROLE_KEYS if k in turn), None)
            if key == "from":
                style = "ShareGPT (from/value)"
            if key is not None and isinstance(turn[key], str):
                seen[turn[key]] = None
    extra = {r: EXTRA_ROLES[r.lower()] for r in seen if r not in DEFAULT_ROLES and r.lower() in EXTRA_ROLES}
    extra |= {r: DEFAULT_ROLES[r.lower()] for r in seen if r not in DEFAULT_ROLES and r.lower() in DEFAULT_ROLES}
    unknown = [r for r in seen if r not in DEFAULT_ROLES and r not in extra]
    return style, extra, unknown


def _chat(guess: Guess, rows: Sequence[dict[str, Any]], columns: Sequence[str], column: str, why: str) -> Guess:
    style, guess.roles, unknown = _roles(rows, column)
    guess.kind = guess.kind or style
    guess.reasons.append(f"format chat: column {column!r} {why} ({style})")
    if column != "messages":
        guess.columns["messages"] = column
    if unknown:
        guess.warnings.append(f"role names {', '.join(map(repr, unknown))} are not known: map each in [data.roles] "
                              "to system, user or assistant (the run stops on an unmapped role)")
    for role, plays in guess.roles.items():
        guess.reasons.append(f"role {role!r} read as {plays!r} (data.roles)")
    system = _find([c for c in _text_columns(rows, columns) if c != column], SYSTEM_NAMES)
    if system:
        guess.columns["system"] = system
        guess.reasons.append(f"column {system!r} holds a system prompt (data.columns.system)")
    return guess


def _map(guess: Guess, field_name: str, column: str, why: str) -> None:
    if column != field_name:
        guess.columns[field_name] = column
    guess.reasons.append(f"{field_name} = column {column!r} ({why})")


def _preference(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Guess | None:
    chosen, rejected = _find(columns, ("chosen",)), _find(columns, ("rejected",))
    if not chosen or not rejected:
        return None
    prompt = _find(columns, PROMPT_NAMES, exclude=(chosen, rejected))
    if prompt is not None:
        guess = Guess("preference", kind="preference pairs (prompt/chosen/rejected)", objective="dpo")
        guess.reasons.append("format preference: a prompt column and a chosen and a rejected answer; trained with "
                             "DPO (train.objective; orpo, kto and simpo are the others)")
        _map(guess, "prompt", prompt, "the prompt of each pair")
        _map(guess, "chosen", chosen, "the preferred answer")
        _map(guess, "rejected", rejected, "the answer it is preferred over")
        return guess
    guess = Guess("completion", kind="preference (chosen/rejected)")
    guess.warnings.append(f"preference data without a prompt column: format = \"preference\" (DPO and the other "
                          f"objectives) needs each prompt in its own column, so this spec trains on the chosen "
                          f"answers ({chosen!r}) by supervised fine-tuning; {rejected!r} is not used")
    values = _values(rows, chosen)
    if values and all(_is_conversation(v) for v in values):
        guess.format = "chat"
        return _chat(guess, rows, columns, chosen, "holds the chosen conversations")
    guess.format = "text"
    _map(guess, "text", chosen, "the chosen text; no prompt column")
    return guess


def _instruction(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Guess | None:
    texts = _text_columns(rows, columns)
    instruction = _find(texts, INSTRUCTION_NAMES)
    output = _find(texts, ("output", "response", "answer", "completion", "outputs"), exclude=(instruction or "",))
    if not instruction or not output:
        return None
    guess = Guess("instruction", kind="Alpaca (instruction/input/output)")
    guess.reasons.append(f"format instruction: an instruction column ({instruction!r}) and an answer column "
                         f"({output!r})")
    _map(guess, "instruction", instruction, "the task")
    _map(guess, "output", output, "the trained answer")
    if (extra := _find(texts, INPUT_NAMES, exclude=(instruction, output))) is not None:
        _map(guess, "input", extra, "optional input shown with the instruction")
    if (system := _find(texts, SYSTEM_NAMES, exclude=(instruction, output))) is not None:
        _map(guess, "system", system, "a system prompt")
    return guess


def _completion(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Guess | None:
    texts = _text_columns(rows, columns)
    answer = _find(texts, ANSWER_NAMES)
    prompt = _find(texts, PROMPT_NAMES, exclude=(answer or "",))
    if not answer or not prompt:
        return None
    guess = Guess("completion", kind=f"prompt/answer pairs ({prompt}/{answer})")
    guess.reasons.append(f"format completion: {prompt!r} reads as a prompt and {answer!r} as its answer")
    _map(guess, "prompt", prompt, "masked: the model sees it")
    _map(guess, "completion", answer, "trained: the model learns to write it")
    return guess


def _by_position(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Guess | None:
    texts = _text_columns(rows, columns)
    named = _find(texts, TEXT_NAMES)
    if len(texts) == 1 or named:
        column = named or texts[0]
        guess = Guess("text", kind="raw text")
        guess.reasons.append(f"format text: {column!r} is " + ("the only text column" if len(texts) == 1
                                                               else "named like running text"))
        _map(guess, "text", column, "every token trained")
        return guess
    if len(texts) >= 2:
        prompt, answer = texts[0], texts[1]
        guess = Guess("completion", kind=f"two text columns ({prompt}/{answer})")
        guess.reasons.append(f"format completion: no column name says which is the answer; taken by position, "
                             f"the first text column {prompt!r} as the prompt and the second {answer!r} as the answer")
        guess.warnings.append(f"check the mapping: {prompt!r} -> prompt, {answer!r} -> completion were guessed from "
                              "the column order (swap them with --column prompt=... --column completion=...)")
        _map(guess, "prompt", prompt, "first text column")
        _map(guess, "completion", answer, "second text column")
        return guess
    return None


def detect(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Guess:
    """The format and mapping of a dataset from its first rows; raises ValueError when nothing fits."""
    if (chat := _conversation_column(rows, columns)) is not None:
        if _find(columns, ("rejected",)) and chat == _find(columns, ("chosen",)):
            found = _preference(rows, columns)
            assert found is not None
            return found
        return _chat(Guess("chat"), rows, columns, chat, "holds lists of turns")
    for rule in (_preference, _instruction, _completion, _by_position):
        if (guess := rule(rows, columns)) is not None:
            return guess
    found = ", ".join(columns) or "(none)"
    raise ValueError(f"no text or conversation column found (columns: {found}); ftc needs conversations, "
                     "prompt/answer pairs, instructions or text")
