"""Encoding with several processes: the examples are split into chunks, each chunk is encoded in a
forked worker (which inherits the tokenizer, so nothing large is pickled on the way in) and the
encodings come back in order. Small data sets, or one process, are encoded in this process, chunk by
chunk as well (ftc.core.data.batch encodes a chunk at once)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

PARALLEL_MIN = 2000  # examples below which forking costs more than it saves
CHUNK = 256

_WORK: dict[str, Any] = {}  # what the forked workers read: the function and the examples


def processes() -> int:
    """Worker processes for the data stage: FTC_DATA_PROCS, else the CPUs this process may use (at most 8)."""
    if (value := os.environ.get("FTC_DATA_PROCS", "")).isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _chunk(bounds: tuple[int, int]) -> list[Any]:
    return list(_WORK["encode"](_WORK["items"][bounds[0]:bounds[1]]))


def map_chunks(encode: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any], procs: int | None = None) -> list[Any]:
    """encode(chunk) over consecutive chunks of `items`, concatenated in order, with `procs` forked workers
    when there are enough items. `encode` returns an exception in the place of an item it cannot encode, as
    the chunk's last result; the results stop there."""
    import multiprocessing

    procs = processes() if procs is None else procs
    bounds = [(i, min(i + CHUNK, len(items))) for i in range(0, len(items), CHUNK)]
    out: list[Any] = []
    if procs <= 1 or len(items) < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods():
        for start, end in bounds:
            out += encode(items[start:end])
            if out and isinstance(out[-1], Exception):
                break
        return out
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust pool must not be forked mid-use
    _WORK.update(encode=encode, items=items)
    try:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for part in pool.imap(_chunk, bounds, chunksize=2):
                out += part
                if part and isinstance(part[-1], Exception):
                    break
            return out
    finally:
        _WORK.clear()
