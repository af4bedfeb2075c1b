"""The console every command prints through: strings are shown as they are, never read as markup, and
their control characters are escaped (ftc.core.text), since most of what ftc prints comes from input
(paths, model names, spec values, event messages)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from ftc.core.text import printable


class SafeConsole(Console):
    """A rich Console without markup whose strings (print arguments, table cells and titles) have their
    control characters escaped. Styling is given with `style=` or `Text` objects, never with `[tags]`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("highlight", False)
        kwargs.setdefault("markup", False)
        super().__init__(**kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)
