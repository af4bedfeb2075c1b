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


TROUBLE_NAMES = {"oom": ("OOM", "OOMs"), "nan": ("NaN skip", "NaN skips"), "rollback": ("rollback", "rollbacks"),
                 "resume": ("resume", "resumes"), "early_stop": ("early stop", "early stops"),
                 "disk_full": ("full disk", "full disks"), "other": ("warning", "warnings")}
"""Singular and plural names of RunState.warning_counts' kinds, in the order they are listed."""


def trouble(counts: dict[str, int]) -> str:
    """'1 OOM, 3 NaN skips, 1 rollback, 2 resumes' (kinds outside TROUBLE_NAMES by their own name)."""
    order = [k for k in TROUBLE_NAMES if counts.get(k)] + [k for k in counts if k not in TROUBLE_NAMES and counts[k]]
    return ", ".join(f"{counts[k]} {TROUBLE_NAMES.get(k, (k, k))[counts[k] != 1]}" for k in order)
