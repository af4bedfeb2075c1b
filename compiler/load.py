"""Read a spec file: TOML syntax and pydantic shape errors become located `SpecError`s.

tomllib keeps no positions, so `locate()` finds a key's line by scanning table headers and
`key =` lines: good enough for hand-written specs, and falls back to the table's header.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ftc.core.errors import Problem, SpecError
from ftc.compiler.methods import METHODS
from ftc.compiler.overrides import Override, apply_overrides, for_key, type_hint
from ftc.compiler.spec import Spec


@dataclass(frozen=True)
class SpecSource:
    """A spec file as read: its display path, text and parsed spec."""

    path: Path
    display: str
    text: str
    spec: Spec
    overrides: tuple[Override, ...] = ()
    """The `--set` flags applied over the file."""

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    def where(self, key: str) -> tuple[str, int | None]:
        """(file or flag, line) to report a problem with `key` at: the `--set` flag that set it, if any."""
        loc = tuple(key.split("."))
        override = for_key(self.overrides, loc)
        return (override.flag, None) if override else (self.display, locate(self.text, loc))


def display_path(path: Path) -> str:
    """The path as users should see it: relative to the working directory when inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", key)]


def locate(text: str, path: tuple[str, ...]) -> int | None:
    """Line number (1-based) of the deepest prefix of `path` found in the TOML text."""
    best: tuple[int, int] | None = None  # (matched depth, line)
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header and not _KEY.match(line):
            table = _split_key(header.group(1))
            full = table
        else:
            key = _KEY.match(line)
            if not key:
                continue
            full = table + _split_key(key.group(1))
        depth = 0
        for a, b in zip(full, path):
            if a != b:
                break
            depth += 1
        if depth and (best is None or depth > best[0]) and depth >= min(len(full), len(path)):
            best = (depth, number)
    return best[1] if best else None


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
    """Drop pydantic's union tag from `method.<kind>.field` and find the owning model."""
    parts = tuple(str(p) for p in loc)
    if len(parts) >= 2 and parts[0] == "method" and parts[1] in METHODS:
        return ("method", *parts[2:]), METHODS[parts[1]]
    if parts[:1] == ("method",):
        return parts, None
    return parts, _model_at(parts)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem_for(error: Any, source: str, text: str, overrides: tuple[Override, ...] = ()) -> Problem:
    loc, owner = _clean_loc(tuple(error["loc"]))
    if (override := for_key(overrides, loc)) is not None:  # reported at the flag, not at a line of the file
        problem = _problem_for(error, override.flag, "")
        return Problem(problem.file, None, problem.key, problem.message + type_hint(override, error["type"]))
    key = ".".join(loc)
    kind = error["type"]
    value = error.get("input")
    line = locate(text, loc)
    if kind == "extra_forbidden":
        allowed = sorted(owner.model_fields) if owner else []
        if loc[:1] == ("method",) and owner is not None:
            allowed = [f for f in allowed if f != "kind"] + ["kind"]
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        where = ".".join(loc[:-1]) or "the top level"
        return Problem(source, line, key, f"unknown key in {where}; {hint}")
    if kind == "missing":
        return Problem(source, line, key, "required key is missing; add it (see docs/spec.md)")
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        kinds = ", ".join(METHODS)
        got = value.get("kind") if isinstance(value, dict) else value
        close = difflib.get_close_matches(str(got), list(METHODS), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of: {kinds}"
        if kind == "union_tag_not_found":
            return Problem(source, line, "method.kind", f"missing; set kind to one of: {kinds}")
        return Problem(source, locate(text, ("method", "kind")) or line, "method.kind",
                       f"unknown method (got {got!r}); {hint}")
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        options = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"use one of: {expected}"
        return Problem(source, line, key, f"not an allowed value (got {_describe(value)}); {hint}")
    message = error["msg"]
    message = message[0].lower() + message[1:] if message else message
    if message.startswith("value error, "):
        return Problem(source, line, key, message[len("value error, "):])
    return Problem(source, line, key, f"{message} (got {_describe(value)}); see docs/spec.md, [{loc[0]}]")


def _union_dedupe(errors: list[Any]) -> list[Any]:
    """A value that fails `int | "auto"` reports one error per union member: keep the first per key."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for error in errors:
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and (p.startswith("literal[") or p in {
            "int", "float", "str", "bool", "list[str]", "constrained-int"})))
        if loc in seen:
            continue
        seen.add(loc)
        kept.append({**error, "loc": loc})
    return kept


def load_spec(path: str | Path, overrides: tuple[Override, ...] = ()) -> SpecSource:
    """Read and validate a spec file, with `--set` overrides applied over it (compiler/overrides.py);
    raises `SpecError` listing every problem found."""
    path = Path(path)
    source = display_path(path)
    if not path.exists():
        raise SpecError([Problem(source, None, "", "spec file not found; check the path")])
    if path.is_dir():
        raise SpecError([Problem(source, None, "", "is a directory; give the path of a .toml spec file")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Problem(source, None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                 "save the spec as UTF-8")]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.search(r"\(at line (\d+), column (\d+)\)", message)
        line = int(match.group(1)) if match else None
        what = re.sub(r"\s*\(at line \d+, column \d+\)", "", message)
        if match:
            what += f" at column {match.group(2)}"
        raise SpecError([Problem(source, line, "", f"TOML syntax error: {what}; "
                                 "see https://toml.io for the syntax")]) from None
    try:
        spec = Spec.model_validate(apply_overrides(raw, overrides))
    except ValidationError as exc:
        problems = [_problem_for(e, source, text, overrides) for e in _union_dedupe(exc.errors())]
        problems.sort(key=lambda p: (p.line or 0, p.key))
        raise SpecError(problems) from None
    return SpecSource(path=path, display=source, text=text, spec=spec, overrides=overrides)
