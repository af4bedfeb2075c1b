"""The one exception tree of ftc. Only `cli.main` catches these; it prints them without a traceback.

Every message names where (file and line when known), the key, what is wrong with the value
seen, and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftc.core.text import printable


@dataclass(frozen=True)
class Problem:
    """One located problem in a spec: rendered as `FILE:LINE: key.path: message`."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        """One line per problem: a newline or escape in the file, key or message is shown escaped, so input
        cannot forge a line of the listing or reach the terminal raw."""
        file, key, message = (printable(part, line=True) for part in (self.file, self.key, self.message))
        where = f"{file}:{self.line}" if self.line else file
        return f"{where}: {key}: {message}" if key else f"{where}: {message}"


class FtcError(Exception):
    """Root of every error ftc reports to a user. `exit_code` is what the CLI exits with."""

    exit_code = 1


class SpecError(FtcError):
    """The spec is wrong: syntax, shape, or consistency with the model and data. Lists every problem."""

    exit_code = 2

    def __init__(self, problems: list[Problem], more: int = 0) -> None:
        self.problems = problems
        self.more = more
        """Problems found past the listed ones (a spec with thousands of bad keys lists the first)."""
        lines = [str(p) for p in problems] + ([f"... and {more} more problem{'s' if more != 1 else ''}"] if more else [])
        super().__init__("\n".join(lines))

    @property
    def count(self) -> int:
        return len(self.problems) + self.more


class BudgetError(FtcError):
    """No setting fits the hardware budget; the message says by how much and what would fit. `key`: the spec
    key whose budget is exceeded, when one alone is (compile_spec then prefixes the message with its file:line)."""

    exit_code = 2

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


class TemplateError(FtcError):
    """A template failed to render: a bug in ftc, never in the user's spec."""


class RunError(FtcError):
    """A run could not start or did not finish; the message says where its log is."""


class DataProblem(FtcError):
    """The data cannot become training examples (unmappable roles, unreadable rows, nothing trained);
    the message names the file and rows."""

    exit_code = 2


class UsageError(FtcError):
    """A command-line value cannot be used (a folder that cannot be written, a prompt past the model's context);
    the message names the option, the value and what to give instead."""

    exit_code = 2
