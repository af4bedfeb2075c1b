"""Where the data stage keeps what it computed once: file hashes (see files.py) and prepared data."""

from __future__ import annotations

from pathlib import Path

from ftc.core.bundled import cache_root


def data_cache() -> Path:
    """The data cache folder (not created): FTC_CACHE/data, shared by every run and rank on this machine."""
    return cache_root() / "data"


def hashes_file() -> Path:
    return data_cache() / "hashes.json"
