"""The validation split and the mixing weights: which examples are held out, how often each one trains.

A held-out share is drawn with the run's seed from the cleaned examples (a second validation
source goes through the stage itself, see stage.py); mixing weights are applied to the training
split only, so a repeated row is never counted as a duplicate nor leaks into validation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from ftc.core.data.encode import DataError
from ftc.core.data.settings import DataSettings

T = TypeVar("T")


def held_out(count: int, settings: DataSettings, source: str) -> set[int]:
    """Positions (among `count` kept examples) of data.validation's held-out share, drawn with the run's seed."""
    if not settings.validation:
        return set()
    order = list(range(count))
    random.Random(settings.seed).shuffle(order)
    held = math.ceil(count * float(settings.validation))
    if held >= count:
        raise DataError(f"{source}: {count} example(s) left after cleaning; too few to hold "
                        f"{settings.validation:.0%} out for validation; add rows or lower data.validation")
    return set(order[:held])


def hold_out(encoded: list[T], settings: DataSettings, source: str) -> tuple[list[T], list[T]]:
    """(train, validation): data.validation's share of the examples held out (held_out)."""
    held = held_out(len(encoded), settings, source)
    return [e for i, e in enumerate(encoded) if i not in held], [e for i, e in enumerate(encoded) if i in held]


def weighted(sources: Sequence[int], weights: Sequence[float], seed: int) -> list[int]:
    """The training order of a mix, as positions: `sources[p]` is the source (its index in `weights`) of
    training example p; each source's examples `weight` times: whole copies, then a seeded share of the rest."""
    rng = random.Random(seed)
    out: list[int] = []
    for index, weight in enumerate(weights):
        mine = [p for p, s in enumerate(sources) if s == index]
        whole, part = int(weight), weight - int(weight)
        out += mine * whole
        if part:
            out += rng.sample(mine, round(part * len(mine)))
    return out
