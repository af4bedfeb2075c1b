"""Pydantic's shape errors as located `Problem`s: one per key, saying what was expected, what the
TOML held, and how to fix it. Only the first `SHOWN_PROBLEMS` are worded; the rest are counted.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from ftc.compiler.limits import SHOWN_PROBLEMS
from ftc.compiler.methods import METHODS, KeyConflict
from ftc.compiler.overrides import Override, for_key, type_hint
from ftc.compiler.spec import Spec
from ftc.core.errors import Problem, SpecError

Locate = Callable[[tuple[str, ...]], "int | None"]

# The loc element pydantic adds for the member of a union that failed (`int | "auto"` -> "int", "literal['auto']").
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|constrained-\w+|(literal|list|dict|function-\w+|json-or-python)\[.*\])$")
_EXPECTED = {"int_type": "an integer", "int_from_float": "an integer (no fraction)", "float_type": "a number",
             "bool_type": "true or false", "string_type": "a string in quotes", "list_type": "an array [...]",
             "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table"}


def _toml_type(value: Any) -> str:
    for kind, word in ((bool, "a boolean"), (int, "an integer"), (float, "a float"), (str, "a string"),
                       (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return word
    return "a date/time" if isinstance(value, (datetime.date, datetime.time)) else type(value).__name__


def _describe(value: Any) -> str:
    if isinstance(value, (dict, list)) and len(value) > 8:
        return f"{_toml_type(value)} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of `loc` (for did-you-mean)."""
    model: type[BaseModel] = Spec
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model


def _clean_loc(loc: tuple[Any, ...]) -> tuple[tuple[str, ...], type[BaseModel] | None]:
    """Drop pydantic's union tags (`method.<kind>.field`, `field.int`) and find the owning model."""
    parts = tuple(str(p) for p in loc if not (isinstance(p, str) and _UNION_MEMBER.match(p)))
    if len(parts) >= 2 and parts[0] == "method" and parts[1] in METHODS:
        return ("method", *parts[2:]), METHODS[parts[1]]
    if parts[:1] == ("method",):
        return parts, None
    return parts, _model_at(parts)


def _conflict(error: dict[str, Any]) -> KeyConflict | None:
    exc = error.get("ctx", {}).get("error")
    return exc if isinstance(exc, KeyConflict) else None


def _grouped(errors: list[Any]) -> list[list[dict[str, Any]]]:
    """The errors of each key together: a value that fails `int | "auto"` fails once per member."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for error in errors:
        conflict = _conflict(error)
        loc = tuple(conflict.key.split(".")) if conflict else _clean_loc(tuple(error["loc"]))[0]
        groups.setdefault(loc, []).append(error)
    return list(groups.values())


def _where(group: list[dict[str, Any]], locate: Locate) -> tuple[int | None, str]:
    error = group[0]
    conflict = _conflict(error)
    if conflict:
        return locate(tuple(conflict.key.split("."))), conflict.key
    loc, _ = _clean_loc(tuple(error["loc"]))
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        return locate(("method", "kind")) or locate(loc), "method.kind"
    return locate(loc), ".".join(loc)


def _type_fix(key: str, value: Any, expected: list[str]) -> str:
    name = key.rsplit(".", 1)[-1]
    if isinstance(value, str):
        text = value.strip().lower()
        if "true or false" in expected and text in ("true", "false"):
            return f"write {name} = {text}, without quotes"
        if re.fullmatch(r"[+-]?\d+", text) and ("an integer" in expected or "a number" in expected):
            return f"write {name} = {int(text)}, without quotes"
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?", text) and "a number" in expected:
            return f"write {name} = {text}, without quotes"
        if "true or false" in expected and "a string in quotes" not in expected:
            return f"write {name} = true or {name} = false, without quotes"
    if isinstance(value, bool) and ("an integer" in expected or "a number" in expected):
        return f"write a number without quotes (TOML's {str(value).lower()} is a boolean)"
    if isinstance(value, int) and not isinstance(value, bool) and "true or false" in expected:
        return f"write {name} = true or {name} = false (TOML booleans, not 1 or 0)"
    if isinstance(value, float) and value.is_integer() and "an integer" in expected:
        return f"write {name} = {int(value)} (a whole number)"
    return f"see docs/spec.md, [{key.split('.')[0]}]"


def _type_message(key: str, group: list[dict[str, Any]]) -> str:
    """A value of the wrong type: every type the key accepts, the TOML type it has, the fix."""
    expected: list[str] = []
    for error in group:
        if error["type"] == "literal_error":
            words = [f"{option!r}" for option in re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))]
            word = " or ".join(words) or "an allowed value"
        else:
            word = _EXPECTED.get(error["type"], error["type"].replace("_", " "))
        if word not in expected:
            expected.append(word)
    value = group[0].get("input")
    return (f"expected {' or '.join(expected)}, got {_describe(value)} ({_toml_type(value)}); "
            f"{_type_fix(key, value, expected)}")


def _extra_message(loc: tuple[str, ...], owner: type[BaseModel] | None) -> str:
    allowed = sorted(owner.model_fields) if owner else []
    if loc[:1] == ("method",) and owner is not None:
        allowed = [f for f in allowed if f != "kind"] + ["kind"]
    close = difflib.get_close_matches(loc[-1][:200], allowed, n=1, cutoff=0.4)
    hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
    return f"unknown key in {'.'.join(loc[:-1]) or 'the top level'}; {hint}"


def _tag_message(error: dict[str, Any]) -> str:
    kinds = ", ".join(METHODS)
    if error["type"] == "union_tag_not_found":
        return f"missing; set kind to one of: {kinds}"
    value = error.get("input")
    got = value.get("kind") if isinstance(value, dict) else value
    close = difflib.get_close_matches(str(got)[:200], list(METHODS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"use one of: {kinds}"
    return f"unknown method (got {_describe(got)}); {hint}"


def _message(group: list[dict[str, Any]], key: str) -> str:
    """What is wrong with one key, from the errors pydantic reported for it."""
    conflict = next((c for c in map(_conflict, group) if c), None)
    if conflict:
        return str(conflict)
    typed = all(e["type"] in _EXPECTED or e["type"] == "literal_error" for e in group)
    error = group[0] if typed else next(e for e in group if e["type"] not in _EXPECTED and e["type"] != "literal_error")
    kind, value = error["type"], error.get("input")
    loc, owner = _clean_loc(tuple(error["loc"]))
    if kind == "extra_forbidden":
        return _extra_message(loc, owner)
    if kind == "missing":
        return "required key is missing; add it (see docs/spec.md)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag_message(error)
    if kind == "literal_error" and len(group) == 1:
        options = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
        close = difflib.get_close_matches(str(value)[:200], options, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of: {error.get('ctx', {}).get('expected', '')}"
        return f"not an allowed value (got {_describe(value)}); {hint}"
    if typed:
        return _type_message(key, group)
    message = error["msg"]
    message = message[0].lower() + message[1:] if message else message
    if message.startswith("value error, "):
        return message[len("value error, "):]
    if kind == "too_short" and isinstance(value, list):
        return f"is an empty array; give at least {error['ctx']['min_length']} item(s), or leave the key out for its default"
    return f"{message} (got {_describe(value)}); see docs/spec.md, [{loc[0]}]"


def shape_error(errors: list[Any], source: str, locate: Locate, overrides: tuple[Override, ...] = ()) -> SpecError:
    """One SpecError for pydantic's errors, sorted by line; past SHOWN_PROBLEMS only counted. A key a
    `--set` flag gave is reported at the flag, not at a line of the file."""
    placed = sorted(((*_where(group, locate), group) for group in _grouped(errors)), key=lambda p: (p[0] or 0, p[1]))
    problems = [_problem(source, line, key, group, overrides) for line, key, group in placed[:SHOWN_PROBLEMS]]
    return SpecError(problems, more=len(placed) - len(problems))


def _problem(source: str, line: int | None, key: str, group: list[dict[str, Any]],
             overrides: tuple[Override, ...]) -> Problem:
    override = for_key(overrides, tuple(key.split(".")))
    if override is None:
        return Problem(source, line, key, _message(group, key))
    return Problem(override.flag, None, key, _message(group, key) + type_hint(override, group[0]["type"]))
