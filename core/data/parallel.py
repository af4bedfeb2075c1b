"""Encoding with several processes: the examples are split into chunks, each chunk is encoded in a
forked worker (which inherits the tokenizer, so nothing large is pickled on the way in) and the
encodings come back in order. Small data sets, or one process, are encoded in this process."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

PARALLEL_MIN = 2000  # examples below which forking costs more than it saves
CHUNK = 500

_WORK: dict[str, Any] = {}  # what the forked workers read: the function and the examples


def processes() -> int:
    """Worker processes for the data stage: FTC_DATA_PROCS, else the CPUs this process may use (at most 8)."""
    if (value := os.environ.get("FTC_DATA_PROCS", "")).isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _chunk(bounds: tuple[int, int]) -> list[Any]:
    encode, items = _WORK["encode"], _WORK["items"]
    out = []
    for item in items[bounds[0]:bounds[1]]:
        try:
            out.append(encode(item))
        except Exception as exc:  # noqa: BLE001 - raised again, in order, by the parent
            out.append(exc)
            break
    return out


def map_in_order(encode: Callable[[Any], Any], items: Sequence[Any], procs: int | None = None) -> list[Any]:
    """[encode(item) for item in items], with `procs` forked workers when there are enough items.
    An exception raised by `encode` is returned in the item's place (the caller raises it)."""
    import multiprocessing

    procs = processes() if procs is None else procs
    if procs <= 1 or len(items) < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods():
        return [_safe(encode, item) for item in items]
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust pool must not be forked mid-use
    _WORK.update(encode=encode, items=items)
    bounds = [(i, min(i + CHUNK, len(items))) for i in range(0, len(items), CHUNK)]
    try:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            out: list[Any] = []
            for part in pool.imap(_chunk, bounds, chunksize=4):
                out += part
                if part and isinstance(part[-1], Exception):
                    break
            return out
    finally:
        _WORK.clear()


def _safe(encode: Callable[[Any], Any], item: Any) -> Any:
    try:
        return encode(item)
    except Exception as exc:  # noqa: BLE001 - the caller raises it, naming the row
        return exc
