"""Read a spec file: TOML syntax and pydantic shape errors become located `SpecError`s.

tomllib keeps no positions, so `locate()` finds a key's line in an index of table headers and
`key =` lines, built once per text: good enough for hand-written specs, and falls back to the
table's header. A file is refused before parsing when it is not a regular file, too big or too
deeply nested (compiler/limits.py).
"""

from __future__ import annotations

import functools
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftc.core.errors import Problem, SpecError
from ftc.compiler.limits import SPEC_BYTES, SPEC_DEPTH
from ftc.compiler.overrides import Override, apply_overrides, for_key
from ftc.compiler.shape import shape_error
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
    except (ValueError, OSError, RuntimeError):  # outside the working directory, too long, a symlink loop
        return path.as_posix()


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")


def _split_key(key: str) -> list[str]:
    return [part.strip().strip("\"'") for part in re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", key)]


@functools.lru_cache(maxsize=4)
def _index(text: str) -> tuple[dict[tuple[str, ...], int], dict[tuple[str, ...], int]]:
    """One pass over the text: the first line of each full key (table + key), and the first line
    of any key under each prefix. `locate` is then a few lookups, whatever the spec's size."""
    exact: dict[tuple[str, ...], int] = {}
    under: dict[tuple[str, ...], int] = {}
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        key = _KEY.match(line)
        if header and not key:
            table = _split_key(header.group(1))
            full = tuple(table)
        elif key:
            full = tuple(table + _split_key(key.group(1)))
        else:
            continue
        exact.setdefault(full, number)
        for depth in range(1, len(full) + 1):
            under.setdefault(full[:depth], number)
    return exact, under


def locate(text: str, path: tuple[str, ...]) -> int | None:
    """Line number (1-based) of the deepest prefix of `path` found in the TOML text: the first
    line at or under `path` itself, else the line of its longest written prefix."""
    exact, under = _index(text)
    if path and path in under:
        return under[path]
    for depth in range(len(path) - 1, 0, -1):
        if path[:depth] in exact:
            return exact[path[:depth]]
    return None


def _refuse(source: str, message: str) -> SpecError:
    return SpecError([Problem(source, None, "", message)])


def _read_text(path: Path, source: str) -> str:
    """The spec's text; a missing, special, oversized or non-UTF-8 file is refused before reading
    it (a FIFO would block the read forever)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise _refuse(source, "spec file not found; check the path") from None
    except OSError as exc:
        raise _refuse(source, f"cannot be read ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        raise _refuse(source, "is a directory; give the path of a .toml spec file")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(source, "is not a regular file (a pipe, socket or device); give the path of a .toml spec file")
    if info.st_size > SPEC_BYTES:
        raise _refuse(source, f"is {info.st_size:,} bytes; a spec is at most {SPEC_BYTES:,} bytes (is it the "
                      "right file?)")
    try:
        with path.open("rb") as handle:
            data = handle.read(SPEC_BYTES + 1)
    except OSError as exc:
        raise _refuse(source, f"cannot be read ({exc.strerror}); check its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(source, f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the spec as UTF-8") from None


def _parse(text: str, source: str) -> dict[str, Any]:
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
    except RecursionError:
        raise _refuse(source, f"arrays or tables nested too deep to read; a spec nests at most {SPEC_DEPTH} "
                      "levels (its own tables need 4)") from None
    if _depth(raw) > SPEC_DEPTH:
        raise _refuse(source, f"arrays or tables nested more than {SPEC_DEPTH} levels deep; a spec nests at most "
                      f"{SPEC_DEPTH} (its own tables need 4)")
    return raw


def _depth(value: Any) -> int:
    """Nesting depth of tables and arrays, without recursion (counted up to SPEC_DEPTH + 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth <= SPEC_DEPTH:  # deeper is refused anyway: stop counting
                stack.extend((child, depth + 1) for child in children)
    return deepest


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _checked_name(spec: Spec, path: Path, source: str) -> None:
    """The compiled and run folders are named after the spec: a file stem like `..` must not be one."""
    if spec.name is None and not (_NAME.match(path.stem) and len(path.stem) <= 100 and path.stem.strip(".")):
        raise _refuse(source, f"the file name {path.stem!r} cannot name the compiled/ and runs/ folders (letters, "
                      "digits, '.', '_' and '-', starting with a letter or digit); add name = \"my-run\" to the "
                      "spec or rename the file")


def load_spec(path: str | Path, overrides: tuple[Override, ...] = ()) -> SpecSource:
    """Read and validate a spec file, with `--set` overrides applied over it (compiler/overrides.py);
    raises `SpecError` listing every problem found."""
    path = Path(path)
    source = display_path(path)
    text = _read_text(path, source)
    raw = _parse(text, source)
    try:
        spec = Spec.model_validate(apply_overrides(raw, overrides))
    except ValidationError as exc:
        raise shape_error(exc.errors(), source, functools.partial(locate, text), overrides) from None
    _checked_name(spec, path, source)
    return SpecSource(path=path, display=source, text=text, spec=spec, overrides=overrides)
