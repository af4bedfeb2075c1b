"""Small formatting helpers shared by the monitor and the plain views (no Textual)."""

from __future__ import annotations

import math

STATE_STYLES = {"completed": "bold green", "failed": "bold red", "stopped": "bold yellow", "stopping": "yellow",
                "running": "bold cyan", "starting": "cyan"}
GIB = 2**30


def duration(seconds: float | None) -> str:
    """1:02:03, 4:05 or 7s."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if minutes:
        return f"{minutes}:{secs:02d}"
    return f"{secs}s"


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"
