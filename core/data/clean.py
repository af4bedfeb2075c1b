"""Near-duplicate detection for the data stage: MinHash over character 5-grams, confirmed exactly.

Exact duplicates are found by hashing whole examples in datastage.py; this module finds the
examples that differ only a little (punctuation, spacing, a word), which MinHash with LSH banding
proposes as candidate pairs and their exact Jaccard similarity confirms.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

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
    """{index: (index of the earlier example it repeats, similarity)} for pairs at or above `threshold`.

    MinHash signatures with LSH banding find candidate pairs; each candidate is confirmed with
    its exact Jaccard similarity of character 5-gram sets, so the threshold means what it says.
    """
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
