"""Cleaning: exact and near duplicates dropped after the first, then the length filters.

Exact duplicates are found by hashing whole examples (after mapping); near duplicates, examples
that differ only a little (punctuation, spacing, a word), are proposed as candidate pairs by MinHash
with LSH banding over character 5-grams and confirmed by their exact Jaccard similarity.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import orjson

from ftc.core.data.encode import DataError, Encoded
from ftc.core.data.load import Item, Source, drop_row, where
from ftc.core.data.mapping import example_text
from ftc.core.data.settings import DataSettings

_SHINGLE = 5  # character n-grams: robust for short examples, where word n-grams are too few
_PERMUTATIONS, _BANDS = 64, 16  # 16 bands of 4 rows: pairs above ~0.6 similarity become candidates
_PRIME = (1 << 31) - 1


def shingles(text: str) -> set[str]:
    normal = re.sub(r"\s+", " ", text.lower()).strip()
    if len(normal) <= _SHINGLE:
        return {normal}
    return {normal[i:i + _SHINGLE] for i in range(len(normal) - _SHINGLE + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicates(texts: Sequence[str], threshold: float) -> dict[int, tuple[int, float]]:
    """{index: (index of the earlier example it repeats, similarity)} for pairs at or above `threshold`;
    MinHash candidates are confirmed by their exact Jaccard similarity, so the threshold means what it says."""
    import numpy as np

    rng = np.random.default_rng(1)
    a = rng.integers(1, _PRIME, _PERMUTATIONS, dtype=np.int64)
    b = rng.integers(0, _PRIME, _PERMUTATIONS, dtype=np.int64)
    sets = [shingles(t) for t in texts]
    buckets: dict[tuple[int, bytes], list[int]] = {}
    rows = _PERMUTATIONS // _BANDS
    for index, grams in enumerate(sets):
        base = np.array([int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "little") % _PRIME
                         for g in grams], dtype=np.int64)
        signature = ((base[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)
        for band in range(_BANDS):
            key = (band, signature[band * rows:(band + 1) * rows].tobytes())
            buckets.setdefault(key, []).append(index)
    found: dict[int, tuple[int, float]] = {}
    for members in buckets.values():
        for j_pos, j in enumerate(members[1:], start=1):
            if j in found:
                continue
            for i in members[:j_pos]:
                if i in found:
                    continue
                similarity = jaccard(sets[i], sets[j])
                if similarity >= threshold:
                    found[j] = (i, similarity)
                    break
    return found


def key(example: dict[str, Any]) -> bytes:
    """An example's identity for exact dedup: 16 bytes of the hash of its mapped form (so column order
    and extra columns do not matter)."""
    return hashlib.sha256(example_json(example, sort_keys=True)).digest()[:16]


def example_json(example: dict[str, Any], sort_keys: bool = False) -> bytes:
    """An example as UTF-8 JSON: orjson's (~6x the json module's speed; these dumps, the dedup key and the data
    cache's example column, were the stage's largest per-row cost after reading), json's for what orjson
    refuses (a lone surrogate, an integer past 64 bits), so one example always takes the same path."""
    try:
        return orjson.dumps(example, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(example, sort_keys=sort_keys).encode()


Data = dict[tuple[int, int], Any]  # (source index, row number) -> the row as read, for the records of dropped rows


class Dedup:
    """Exact duplicates after the first, over the chunks of every source in order (a chunk at a time:
    only the keys of the examples are kept); `seen`: examples of another split, whose repeats are
    dropped whatever the settings (validation rows that are also training rows)."""

    def __init__(self, settings: DataSettings, sources: list[Source], dropped: list[dict[str, Any]],
                 seen: dict[bytes, tuple[int, int]] | None = None) -> None:
        self.settings, self.sources, self.dropped, self.seen = settings, sources, dropped, seen
        self.first: dict[bytes, tuple[int, int]] = {}

    def __call__(self, items: list[Item], data: Data | None = None) -> list[Item]:
        kept: list[Item] = []
        for index, number, example in items:
            example_key = key(example)
            row = data.get((index, number)) if data is not None else None
            if self.seen is not None and example_key in self.seen:
                drop_row(self.dropped, self.sources[index], number, "in_training_data",
                         f"the same example is training {where(self.sources, *self.seen[example_key], of=-1)}", row)
            elif self.settings.dedup and example_key in self.first:
                drop_row(self.dropped, self.sources[index], number, "duplicate",
                         f"the same example as {where(self.sources, *self.first[example_key], of=index)}", row)
            else:
                self.first.setdefault(example_key, (index, number))
                kept.append((index, number, example))
        return kept


def near_dedup(kept: list[Item], settings: DataSettings, sources: list[Source], dropped: list[dict[str, Any]],
               data: Data | None = None) -> list[Item]:
    """`kept` without the examples at least data.clean.near_dedup similar to an earlier one (all at once:
    every example's text is held while they are compared)."""
    if settings.near_dedup is None or len(kept) < 2:
        return kept
    repeats = near_duplicates([example_text(e) for _, _, e in kept], settings.near_dedup)
    for position, (earlier, similarity) in sorted(repeats.items()):
        index, number, _ = kept[position]
        drop_row(dropped, sources[index], number, "near_duplicate",
                 f"{similarity:.2f} similar to {where(sources, *kept[earlier][:2], of=index)}",
                 data.get((index, number)) if data is not None else None)
    return [item for position, item in enumerate(kept) if position not in repeats]


def length_filter(encoded: list[Encoded], settings: DataSettings, sources: list[Source],
                  dropped: list[dict[str, Any]], data: Data | None = None,
                  untrained: dict[str, list[int]] | None = None) -> list[Encoded]:
    """The encoded examples within data.clean's token bounds that train at least one token. With
    data.clean.untrained = "error", examples with no trained token stop the stage, naming their rows: at
    the end of this call, or, given `untrained` (a chunk at a time), when the caller calls `check_untrained`."""
    by_name = {source.name: source for source in sources}
    positions = {source.name: i for i, source in enumerate(sources)}
    kept: list[Encoded] = []
    found: dict[str, list[int]] = {} if untrained is None else untrained
    for item in encoded:
        source, number, encoding = by_name[item.source], item.row, item.encoding
        row = data.get((positions[item.source], number)) if data is not None else None
        if encoding["length"] < settings.min_tokens:
            drop_row(dropped, source, number, "too_short",
                     f"{encoding['length']} tokens < data.clean.min_tokens = {settings.min_tokens}", row)
        elif settings.max_tokens is not None and encoding["length"] > settings.max_tokens:
            drop_row(dropped, source, number, "too_long",
                     f"{encoding['length']} tokens > data.clean.max_tokens = {settings.max_tokens}", row)
        elif encoding["trained_tokens"] == 0:
            found.setdefault(source.name, []).append(number)
            drop_row(dropped, source, number, "untrained",
                     "no trained token (the answer was truncated away or is empty)", row)
        else:
            kept.append(item)
    if untrained is None:
        check_untrained(found, settings, sources)
    return kept


def check_untrained(untrained: dict[str, list[int]], settings: DataSettings, sources: list[Source]) -> None:
    if untrained and settings.untrained == "error":
        by_name = {source.name: source for source in sources}
        found = "; ".join(f"{name}: {len(rows)} example(s) with no trained token (rows {by_name[name].rows_text(rows)})"
                          for name, rows in untrained.items())
        raise DataError(f"{found}: the answer was truncated away or is empty; raise data.max_length, or set "
                        "data.clean.untrained = \"drop\" to drop them")
