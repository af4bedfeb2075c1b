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


def key(example: dict[str, Any]) -> str:
    """An example's identity for exact dedup: the hash of its mapped form (so column order and
    extra columns do not matter)."""
    return hashlib.sha256(json.dumps(example, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def dedup(items: list[Item], settings: DataSettings, sources: list[Source], dropped: list[dict[str, Any]],
          seen: dict[str, tuple[int, int]] | None = None) -> list[Item]:
    """Exact duplicates (and near ones when asked) after the first; `seen`: examples of another split,
    whose repeats are dropped whatever the settings (validation rows that are also training rows)."""
    kept: list[Item] = []
    first: dict[str, tuple[int, int]] = {}
    for index, number, example in items:
        example_key = key(example)
        if seen is not None and example_key in seen:
            drop_row(dropped, sources[index], number, "in_training_data",
                     f"the same example is training {where(sources, *seen[example_key], of=-1)}")
        elif settings.dedup and example_key in first:
            drop_row(dropped, sources[index], number, "duplicate",
                     f"the same example as {where(sources, *first[example_key], of=index)}")
        else:
            first.setdefault(example_key, (index, number))
            kept.append((index, number, example))
    if settings.near_dedup is not None and len(kept) > 1:
        repeats = near_duplicates([example_text(e) for _, _, e in kept], settings.near_dedup)
        for position, (earlier, similarity) in sorted(repeats.items()):
            index, number, _ = kept[position]
            drop_row(dropped, sources[index], number, "near_duplicate",
                     f"{similarity:.2f} similar to {where(sources, *kept[earlier][:2], of=index)}")
        kept = [item for position, item in enumerate(kept) if position not in repeats]
    return kept


def length_filter(encoded: list[Encoded], settings: DataSettings, sources: list[Source],
                  dropped: list[dict[str, Any]]) -> list[Encoded]:
    """The encoded examples within data.clean's token bounds that train at least one token; with
    data.clean.untrained = "error", examples with no trained token stop the stage, naming their rows."""
    by_name = {source.name: source for source in sources}
    kept: list[Encoded] = []
    untrained: dict[str, list[int]] = {}
    for item in encoded:
        source, number, encoding = by_name[item.source], item.row, item.encoding
        if encoding["length"] < settings.min_tokens:
            drop_row(dropped, source, number, "too_short",
                     f"{encoding['length']} tokens < data.clean.min_tokens = {settings.min_tokens}")
        elif settings.max_tokens is not None and encoding["length"] > settings.max_tokens:
            drop_row(dropped, source, number, "too_long",
                     f"{encoding['length']} tokens > data.clean.max_tokens = {settings.max_tokens}")
        elif encoding["trained_tokens"] == 0:
            untrained.setdefault(source.name, []).append(number)
            drop_row(dropped, source, number, "untrained",
                     "no trained token (the answer was truncated away or is empty)")
        else:
            kept.append(item)
    if untrained and settings.untrained == "error":
        found = "; ".join(f"{name}: {len(rows)} example(s) with no trained token (rows {by_name[name].rows_text(rows)})"
                          for name, rows in untrained.items())
        raise DataError(f"{found}: the answer was truncated away or is empty; raise data.max_length, or set "
                        "data.clean.untrained = \"drop\" to drop them")
    return kept
