"""The validation split and the mixing weights: which examples are held out, how often each one trains.

A held-out share is drawn with the run's seed from the cleaned examples (a second validation
source goes through the stage itself, see stage.py); mixing weights are applied to the training
split only, so a repeated row is never counted as a duplicate nor leaks into validation.
"""

from __future__ import annotations

import math
import random

from ftc.core.data.encode import DataError, Encoded
from ftc.core.data.settings import DataSettings


def hold_out(encoded: list[Encoded], settings: DataSettings, source: str) -> tuple[list[Encoded], list[Encoded]]:
    """(train, validation): data.validation's share of the examples held out, drawn with the run's seed."""
    if not settings.validation:
        return encoded, []
    order = list(range(len(encoded)))
    random.Random(settings.seed).shuffle(order)
    count = math.ceil(len(encoded) * float(settings.validation))
    if count >= len(encoded):
        raise DataError(f"{source}: {len(encoded)} example(s) left after cleaning; too few to hold "
                        f"{settings.validation:.0%} out for validation; add rows or lower data.validation")
    held_out = set(order[:count])
    return [e for i, e in enumerate(encoded) if i not in held_out], [e for i, e in enumerate(encoded) if i in held_out]


def weighted(train: list[Encoded], weights: dict[str, float], seed: int) -> list[Encoded]:
    """Each source's training examples `weight` times: whole copies, then a seeded share of the rest."""
    rng = random.Random(seed)
    out: list[Encoded] = []
    for name, weight in weights.items():
        mine = [e for e in train if e.source == name]
        whole, part = int(weight), weight - int(weight)
        out += mine * whole
        if part:
            out += rng.sample(mine, round(part * len(mine)))
    return out
