"""`--set key.path=value`: spec values given on the command line, applied to the parsed TOML before
validation, so they are checked exactly like the file's values, and recorded in the plan as
`flag: --set key.path=value` instead of `spec: key.path`.

The value rule: VALUE is read as a TOML value (`2`, `1e-4`, `true`, `"text"`, `[1, 2]`,
`{ r = 8 }`); anything that is not valid TOML is taken as a plain string, so paths, names and
hub ids need no quotes (`--set data.source=my.jsonl`). To force a string that looks like
another TOML value, quote it for TOML inside the shell's quotes: `--set name='"2024"'`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftc.core.errors import Problem, SpecError

if TYPE_CHECKING:
    from ftc.compiler.plan import Plan

_KEY = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
REMOVE: Any = type("Remove", (), {"__repr__": lambda self: "<removed>"})()
"""An override value that removes the key (what-if plans drop hardware.vram_gb to plan for a GPU's own memory)."""


@dataclass(frozen=True)
class Override:
    """One `--set`: the dotted key, the parsed value, and the flag as the user wrote it."""

    key: tuple[str, ...]
    value: Any
    flag: str
    """`--set train.epochs=2`: how messages and the plan name it."""

    @property
    def dotted(self) -> str:
        return ".".join(self.key)

    def covers(self, key: Sequence[str]) -> bool:
        """Whether this flag set `key` (the key itself, a table above it, or a key inside it)."""
        n = min(len(key), len(self.key))
        return tuple(key[:n]) == self.key[:n]


def parse_value(text: str) -> Any:
    """A TOML value, or the text itself when it is not one (see the module docstring)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(flags: Iterable[str]) -> tuple[Override, ...]:
    """Parse `key.path=value` strings; raises SpecError naming every malformed flag."""
    found: list[Override] = []
    problems: list[Problem] = []
    for raw in flags:
        flag = f"--set {raw}" if raw.isprintable() else f"--set {raw!r}"  # one line in messages and comments
        key, sep, text = raw.partition("=")
        key = key.strip()
        if not sep or not _KEY.match(key):
            problems.append(Problem(flag, None, "", "expected KEY=VALUE with a dotted spec key, e.g. "
                                    "--set train.epochs=2 or --set model.base=org/name"))
            continue
        if not text.strip():
            problems.append(Problem(flag, None, key, "no value after '='; give one, e.g. "
                                    f"--set {key}=... (quote a string with spaces for the shell)"))
            continue
        found.append(Override(tuple(key.split(".")), parse_value(text.strip()), flag))
    if problems:
        raise SpecError(problems)
    return tuple(found)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """A copy of the parsed spec with each override set (later flags win); raises SpecError when a
    key's parent is a value, not a table."""
    out = _copy(raw)
    problems = []
    for override in overrides:
        table = out
        for depth, part in enumerate(override.key[:-1], start=1):
            node = table.setdefault(part, {})
            if not isinstance(node, dict):
                above = ".".join(override.key[:depth])
                how = (f"set the whole array: --set '{above}=[{{...}}]'" if isinstance(node, list)
                       else f"set {above} itself")
                problems.append(Problem(override.flag, None, override.dotted,
                                        f"{above} is {type(node).__name__} {node!r}, not a table; {how}"))
                break
            table = node
        else:
            if override.value is REMOVE:
                table.pop(override.key[-1], None)
            else:
                table[override.key[-1]] = override.value
    if problems:
        raise SpecError(problems)
    return out


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


def for_key(overrides: Sequence[Override], key: Sequence[str]) -> Override | None:
    """The last flag that set `key` (or a table around it or inside it)."""
    return next((o for o in reversed(overrides) if o.covers(key)), None)


def type_hint(override: Override, error_type: str) -> str:
    """A fix for a value the TOML rule parsed as another type than the key takes."""
    if error_type == "string_type" and not isinstance(override.value, str):
        return f"; to pass it as a string, quote it: --set {override.dotted}='\"{override.value}\"'"
    return ""


_SPEC_WHY = re.compile(r"^spec: ([A-Za-z0-9_.-]+)(.*)$")


def _why(why: str, overrides: Sequence[Override]) -> str:
    match = _SPEC_WHY.match(why)
    if not match:
        return why
    override = for_key(overrides, match.group(1).split("."))
    return f"flag: {override.flag}{match.group(2)}" if override else why


def with_provenance(plan: Plan, overrides: Sequence[Override]) -> Plan:
    """The plan with every `spec: KEY` reason of an overridden key reading `flag: --set KEY=VALUE`."""
    if not overrides:
        return plan
    from ftc.compiler.plan.types import MethodSection, Setting

    sections = {}
    for section in ("model", "data", "method", "hardware", "optim", "run"):
        part = getattr(plan, section)
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, Setting) and (why := _why(value.why, overrides)) != value.why:
                changes[f.name] = Setting(value.value, why)
        if isinstance(part, MethodSection):
            changes["knobs"] = {k: Setting(v.value, _why(v.why, overrides)) for k, v in part.knobs.items()}
        sections[section] = dataclasses.replace(part, **changes)
    return dataclasses.replace(plan, **sections)
