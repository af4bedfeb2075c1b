"""The stage's one pass over its sources: rows are read, mapped (mapping), deduplicated (clean.Dedup),
encoded (batch, with worker processes: parallel) and length-filtered (clean) a block at a time, and each
chunk's kept examples go to a sink as soon as they are encoded: a list (prepare_data), or the data
cache's Arrow file (cache.Writer), so that memory holds a few blocks of rows, the examples' keys for
dedup, and compact columns of numbers (stats.Columns), whatever the size of the data.

Near-duplicate detection (data.clean.near_dedup) compares every example with every earlier one, so with
it the examples of all sources are mapped and held before the first is encoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from ftc.core.data.clean import Data, Dedup, check_untrained, key, length_filter, near_dedup
from ftc.core.data.encode import Encoded, encoded_items
from ftc.core.data.load import Item, Source
from ftc.core.data.mapping import map_rows, unknown_roles
from ftc.core.data.settings import DataSettings

BLOCK = 4096  # rows read, mapped and deduplicated at a time

Sink = Callable[[list[Encoded]], None]


def run(sources: list[Source], indexes: Sequence[int], tokenizer: Any, settings: DataSettings,
        dropped: list[dict[str, Any]], sink: Sink, *, seen: dict[bytes, tuple[int, int]] | None = None,
        keys: dict[bytes, tuple[int, int]] | None = None) -> None:
    """Map, clean and encode the rows of `sources[i]` for i in `indexes`, handing each chunk's kept examples
    to `sink` in order. `seen`: examples of another split (dropped as in_training_data); `keys`: filled
    with the kept examples' keys (the `seen` of a validation source)."""
    from ftc.core.data.batch import encode_many
    from ftc.core.data.parallel import CHUNK, Workers

    dedup = Dedup(settings, sources, dropped, seen)
    blocks = _blocks(sources, indexes, settings, dropped, dedup)
    if settings.near_dedup is not None:
        blocks = iter([_near(blocks, settings, sources, dropped)])
    chunks = (((items[i:i + CHUNK], data), [item[2] for item in items[i:i + CHUNK]])
              for items, data in blocks for i in range(0, len(items), CHUNK))
    untrained: dict[str, list[int]] = {}
    position = {source.name: i for i, source in enumerate(sources)}
    arrays = getattr(sink, "tokens_as_arrays", False)
    with Workers(lambda examples: _as_arrays(encode_many(tokenizer, list(examples), settings, arrays=True)) if arrays
                 else encode_many(tokenizer, list(examples), settings)) as workers:
        for (items, data), encodings in workers.map(chunks):
            kept = length_filter(encoded_items(items, encodings, sources), settings, sources, dropped, data, untrained)
            if keys is not None:
                keys.update((key(e.example), (position[e.source], e.row)) for e in kept)
            sink(kept)
    check_untrained(untrained, settings, sources)


def _as_arrays(encodings: list[Any]) -> list[Any]:
    """The encodings with their token lists as array('i') (for a sink that only writes and counts them): a
    worker's result then travels as bytes, where unpickling Python lists of ints cost the parent more than
    the writing (an exception in an example's place stays as it is)."""
    from array import array

    return [e | {name: e[name] if type(e[name]) is array else array("i", e[name]) for name in ("input_ids", "labels")}
            if isinstance(e, dict) else e for e in encodings]


def _batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(rows)
    while block := list(islice(iterator, size)):
        yield block


def _blocks(sources: list[Source], indexes: Sequence[int], settings: DataSettings, dropped: list[dict[str, Any]],
            dedup: Dedup) -> Iterator[tuple[list[Item], Data]]:
    """(kept items, the rows they came from) a block of rows at a time; roles that cannot be mapped stop the
    stage once their source is read (naming every row that uses them)."""
    for index in indexes:
        source = sources[index]
        unknown: dict[str, list[int]] = {}
        for block in _batched(source.numbered(), BLOCK):
            data = {(index, number): row for number, row in block}
            yield dedup(map_rows(sources, index, settings, dropped, block, unknown), data), data
        unknown_roles(source, unknown)


def _near(blocks: Iterator[tuple[list[Item], Data]], settings: DataSettings, sources: list[Source],
          dropped: list[dict[str, Any]]) -> tuple[list[Item], Data]:
    items: list[Item] = []
    data: Data = {}
    for block, rows in blocks:
        items += block
        data.update(rows)
    return near_dedup(items, settings, sources, dropped, data), data
