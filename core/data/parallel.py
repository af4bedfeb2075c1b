"""Encoding with several processes: chunks of examples are encoded by forked workers (which inherit the
tokenizer, so only the examples are pickled on the way in) and the encodings come back in order. The
examples come as they are read, and at most a few chunks per worker are in flight, so memory holds a
bounded number of chunks whatever the size of the data. The first PARALLEL_MIN examples are encoded in
this process (a small data set never forks), chunk by chunk as well (ftc.core.data.batch encodes a chunk
at once)."""

from __future__ import annotations

import gc
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

PARALLEL_MIN = 2000  # examples below which forking costs more than it saves
CHUNK = 256
IN_FLIGHT = 3  # chunks per worker handed out ahead

_WORK: dict[str, Any] = {}  # what the forked workers read: the function


def processes() -> int:
    """Worker processes for the data stage: FTC_DATA_PROCS, else the CPUs this process may use (at most 8)."""
    if (value := os.environ.get("FTC_DATA_PROCS", "")).isdigit() and int(value) > 0:
        return int(value)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _chunk(items: Sequence[Any]) -> list[Any]:
    return list(_WORK["encode"](items))


class Workers:
    """`encode(chunk)` over chunks handed in one after another (`map`), with `procs` forked workers once
    PARALLEL_MIN items have come; a context manager (the workers end with it)."""

    def __init__(self, encode: Callable[[Sequence[Any]], list[Any]], procs: int | None = None) -> None:
        import multiprocessing

        self.encode, self.pool = encode, None
        self.procs = processes() if procs is None else procs
        if "fork" not in multiprocessing.get_all_start_methods():
            self.procs = 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: Any) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
            _WORK.clear()

    def _start(self) -> None:
        import multiprocessing

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the Rust pool must not be forked mid-use
        _WORK["encode"] = self.encode
        self.pool = multiprocessing.get_context("fork").Pool(self.procs, initializer=gc.freeze)

    def map(self, chunks: Iterable[tuple[Any, Sequence[Any]]]) -> Iterator[tuple[Any, list[Any]]]:
        """(context, encode(items)) for each (context, items), in order. `encode` returns an exception in the
        place of an item it cannot encode, as the chunk's last result; the caller stops there."""
        pending: deque[tuple[Any, Any]] = deque()
        count = 0
        for context, items in chunks:
            count += len(items)
            if self.pool is None and self.procs > 1 and count > PARALLEL_MIN:
                self._start()
            if self.pool is None:
                yield context, list(self.encode(items))
                continue
            pending.append((context, self.pool.apply_async(_chunk, (items,))))
            while len(pending) >= IN_FLIGHT * self.procs:
                done, result = pending.popleft()
                yield done, result.get()
        while pending:
            done, result = pending.popleft()
            yield done, result.get()


def map_chunks(encode: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any], procs: int | None = None) -> list[Any]:
    """encode(chunk) over consecutive chunks of `items`, concatenated in order (Workers); the results stop
    after the first exception."""
    out: list[Any] = []
    with Workers(encode, procs) as workers:
        for _, part in workers.map((None, items[i:i + CHUNK]) for i in range(0, len(items), CHUNK)):
            out += part
            if part and isinstance(part[-1], Exception):
                break
    return out
