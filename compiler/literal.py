"""The one escaping function: every spec value reaches an emitted file through `lit`.

`lit` turns plain data (None, bool, int, finite float, str, list, tuple, dict) into a Python
literal on one line. `repr` of a str is always a valid, single-line literal (newlines, quotes,
backslashes and non-printable characters are escaped), so no spec string can end a literal,
a comment or a line of the script.
"""

from __future__ import annotations

import math
from typing import Any


def lit(value: Any) -> str:
    """A single-line Python literal for `value`; raises TypeError for anything else."""
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"non-finite float {value!r} cannot be emitted")
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(lit(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{lit(k)}: {lit(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"{type(value).__name__} cannot be emitted as a literal")
