"""Folders ftc writes into (`--out`, `--run-dir`, the merged model), checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ftc.core.errors import UsageError


def output_dir_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ftc cannot create or write the folder `path` (None when it can): a file or a dangling symbolic
    link in its place, a file among its parents, no permission, or a name the system refuses. The nearest
    folder that exists is tried for real (a temporary folder made and removed), so it holds for root and
    read-only file systems too."""
    target = candidate = Path(path)
    try:
        if target.is_symlink() and not target.exists():
            return f"is a symbolic link to {os.readlink(target)}, which does not exist"
        for candidate in (target, *target.parents):
            if candidate.is_symlink() and not candidate.exists():
                return f"is under {candidate}, a symbolic link to {os.readlink(candidate)}, which does not exist"
            if not candidate.exists():
                continue
            if not candidate.is_dir():
                return "is a file, not a folder" if candidate == target else f"is under {candidate}, which is a file"
            os.rmdir(tempfile.mkdtemp(dir=candidate, prefix=".ftc-probe-"))
            return None
    except PermissionError:
        return f"cannot be written: permission denied in {candidate}"
    except OSError as exc:
        return f"cannot be used ({exc.strerror or exc})"
    return None  # a relative path whose parents do not exist yet: created from the working folder


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """`path` when ftc can write there, else a UsageError naming the flag, the path and what to do."""
    problem = output_dir_problem(path)
    if problem is not None:
        raise UsageError(f"{flag} {path}: {problem}; give a folder ftc can create or write")
    return Path(path)
