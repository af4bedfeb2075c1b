"""The bounds a spec is held to, in one place: load.py refuses a file past them before parsing it,
spec.py's fields use the string types below. docs/spec.md ("Limits") lists each with its refusal.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

SPEC_BYTES = 1 << 20
"""Largest spec file read (a hand-written spec is a few KB)."""
SPEC_DEPTH = 32
"""Deepest nesting of tables and arrays in a spec (the schema needs 4)."""
SHOWN_PROBLEMS = 50
"""Problems printed for one spec; the rest are counted ("and N more")."""
PATH_CHARS = 4096
"""Longest path or hub id (Linux's PATH_MAX)."""
PATH_PART_CHARS = 255
"""Longest single path component (a file name on Linux, NAME_MAX)."""
NAME_CHARS = 256
"""Longest column, role, module, adapter or GPU name."""
TEXT_CHARS = 65_536
"""Longest free text: a prompt template, a prompt-tuning init text."""
LIST_ITEMS = 1_000
"""Most items of a list or table of names (target modules, columns, roles, mixed sources)."""
MAX_BATCH = 65_536
"""Largest effective batch or micro-batch (examples); the data bounds it further."""
MAX_STEPS = 100_000_000
"""Largest step count (max_steps, and the cadences logging/save/eval steps)."""
MAX_EPOCHS = 10_000
"""Most passes over the data."""
MAX_VRAM_GB = 1_048_576
"""Largest memory budget per device, GiB (1 PiB)."""
MAX_SEED = 2**32 - 1
"""Seeds are 0..2**32-1: numpy's RandomState takes no other."""

# A hub revision: a branch, tag or commit, e.g. "main", "v1.0", "refs/pr/1", a 40-hex commit.
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def _path_parts(value: str) -> str:
    long = next((part for part in value.split("/") if len(part) > PATH_PART_CHARS), None)
    if long is not None:
        raise ValueError(f"has a path component of {len(long)} characters (at most {PATH_PART_CHARS}: the file "
                         "system's limit); shorten that file or directory name")
    if "\x00" in value:
        raise ValueError("holds a NUL character, which no path can; remove it")
    return value


def _revision(value: str) -> str:
    if not _REVISION.match(value) or ".." in value.split("/") or value.endswith(".lock"):
        raise ValueError(f"is not a branch, tag or commit name (got {value!r}); a revision is letters, digits, "
                         "'.', '_', '-' and '/' between names, with no '..' component, e.g. \"main\" or a commit hash")
    return value


PathText = Annotated[str, Field(min_length=1, max_length=PATH_CHARS), AfterValidator(_path_parts)]
"""A file, directory, glob or hub id."""
Name = Annotated[str, Field(min_length=1, max_length=NAME_CHARS)]
"""A column, role, module or GPU name."""
Text = Annotated[str, Field(min_length=1, max_length=TEXT_CHARS)]
"""Free text."""
Revision = Annotated[str, Field(min_length=1, max_length=PATH_PART_CHARS), AfterValidator(_revision)]
"""A hub revision that cannot name a path outside the model's cache folder."""
