"""Text from input, made safe to show: every path, key, value or event text that ftc prints goes
through `printable` (and, where a console library would read it as markup, `markup_safe`).

A spec, a data row, a model directory's name or an events.jsonl line can hold terminal control
sequences (ANSI escapes that recolour, move the cursor or retitle the window), bidirectional
overrides, or a newline that forges an extra line of an error listing. `printable` writes each
such character as a visible escape (`\\x1b`, `\\u202e`); `line=True` escapes newlines too, for text
that must stay on its one line (a key, a file name).
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_CONTROL_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, line: bool = False) -> str:
    """`text` with control characters (and, with `line`, newlines and tabs) written as escapes."""
    return (_CONTROL_OR_NEWLINE if line else _CONTROL).sub(_escape, str(text))


def markup_safe(text: object, *, line: bool = False) -> str:
    """`printable(text)` escaped for rich/Textual markup: `[/x]` is shown, never read as a tag."""
    from rich.markup import escape  # the cli and the monitor have rich; core itself does not load it

    return escape(printable(text, line=line))
