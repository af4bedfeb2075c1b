"""The data stage: rows -> examples -> cleaned -> encoded -> split, with every drop accounted for.

`train.py` and `ftc data` both call `prepare_data`, so what `ftc data` shows is what trains. Steps,
in order, one module each (its docstring says more; each drop is counted by reason and written to
`dropped.jsonl`): `mapping` (rows onto the format), `clean` (duplicates), `encode` (tokens and
labels; then `clean`'s length filters), `split` (the held-out share, mixing weights), `stats`.

Torch-free; `datasets` is imported only to load rows (`load`) and to hand the result to the trainer.
This module is the stage's front: train.py and `ftc data` import what they call from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.core.data import cache
from ftc.core.data.cache import Stored
from ftc.core.data.clean import dedup, key, length_filter
from ftc.core.data.encode import DataError, Encoded, encode_all, encode_example
from ftc.core.data.load import DROP_REASONS, Source, load_rows, rows_list
from ftc.core.data.mapping import map_rows
from ftc.core.data.settings import DataSettings
from ftc.core.data.split import hold_out, weighted
from ftc.core.data.stats import changed_stats, report, source_stats, statistics, write_report

__all__ = ["DROP_REASONS", "DataSettings", "Encoded", "Prepared", "check_saved_tokenizer", "load_rows",
           "prepare_data", "prepare_sources", "report", "shared_by_cache"]


@dataclass
class Prepared:
    """The outcome of the data stage. `train` holds each kept example once; `weighted_train` is
    what trains (mixed sources repeated or subsampled by their weights)."""

    train: Sequence[Encoded]
    validation: Sequence[Encoded]
    dropped: list[dict[str, Any]]
    stats: dict[str, Any]
    weighted_train: Sequence[Encoded] = field(default_factory=list)
    weighted_order: list[int] | None = None
    """From the cache: the training order of a mix, as positions in `train` (a Stored split)."""
    cached: str | None = None
    """The cache entry the data came from (None: computed by this process)."""

    def dataset(self, split: str) -> Any:
        """The split as a `datasets.Dataset` of input_ids and labels (None when empty)."""
        from datasets import Dataset

        stored = self.train if split == "train" else self.validation
        if isinstance(stored, Stored):  # from the cache: the memory-mapped Arrow table itself
            if not len(stored):
                return None
            table = stored.dataset()
            if split == "train" and self.weighted_order is not None:
                table = table.select(self.weighted_order)
            return table.select_columns(["input_ids", "labels"])
        items = (self.weighted_train or self.train) if split == "train" else self.validation
        if not items:
            return None
        return Dataset.from_dict({"input_ids": [e.encoding["input_ids"] for e in items],
                                  "labels": [e.encoding["labels"] for e in items]})

    def conversations(self, split: str = "validation") -> list[list[dict[str, str]]]:
        """The split's conversations (for before/after answers)."""
        items = self.train if split == "train" else self.validation
        return [e.example["messages"] for e in items if "messages" in e.example]


def prepare_data(rows: Any, tokenizer: Any, settings: DataSettings, *, source: str = "data",
                 validation_rows: Any = None, validation_source: str = "validation",
                 mix: Sequence[tuple[str, Any, float]] = (), report_dir: Path | None = None,
                 micro_batch_size: int = 1, packing: bool = False, padding_free: bool = False) -> Prepared:
    """Map, clean, encode and split `rows` (and the `mix` sources: (name, rows, weight)); write
    dropped.jsonl and stats.json to `report_dir`."""
    dropped: list[dict[str, Any]] = []
    sources = [Source(source, rows_list(rows))] + [Source(name, rows_list(r), w) for name, r, w in mix]
    if len({s.name for s in sources}) < len(sources):
        raise DataError(f"the same source is listed twice ({', '.join(s.name for s in sources)}); use weight "
                        "to repeat a source")
    items = [item for index in range(len(sources)) for item in map_rows(sources, index, settings, dropped)]
    items = dedup(items, settings, sources, dropped)
    encoded = length_filter(encode_all(tokenizer, items, settings, sources), settings, sources, dropped)
    rows_read = sum(len(s.rows) for s in sources)
    if not encoded:
        reasons = Counter(d["reason"] for d in dropped)
        raise DataError(f"{source}: no example is left to train on ({rows_read} rows read; dropped: "
                        + (", ".join(f"{n} {r}" for r, n in reasons.items()) or "none") + ")"
                        + (f"; first problem, row {dropped[0]['row']}: {dropped[0]['detail']}" if dropped else ""))
    if isinstance(settings.validation, str) or validation_rows is not None:
        held = Source(validation_source, rows_list(validation_rows if validation_rows is not None else []))
        train, validation = encoded, _second_source(tokenizer, settings, sources, encoded, held, dropped)
        rows_read += len(held.rows)
    else:
        train, validation = hold_out(encoded, settings, source)
    for item in validation:
        item.split = "validation"
    weighted_train = weighted(train, {s.name: s.weight for s in sources}, settings.seed) if mix else []
    stats = statistics(weighted_train or train, validation, dropped, rows_read, settings, micro_batch_size, packing,
                       padding_free)
    if mix:
        stats["sources"] = source_stats(sources, train, weighted_train)
    stats["changed"] = changed_stats(sources)
    prepared = Prepared(train, validation, dropped, stats, weighted_train)
    if report_dir is not None:
        write_report(prepared, Path(report_dir))
    return prepared


def prepare_sources(tokenizer: Any, settings: DataSettings, *, source: str, kind: str | None, split: str = "train",
                    validation_loader: str | None = None, mix: Sequence[dict[str, Any]] = (),
                    report_dir: Path | None = None, micro_batch_size: int = 1, packing: bool = False,
                    padding_free: bool = False) -> Prepared:
    """Read the sources (ftc.core.data.read) and run `prepare_data`, or take its result from the data
    cache when the data's bytes, the tokenizer and every setting are the same (cache.py). `tokenizer`
    may be a cache.Deferred one, loaded only on a miss."""
    options = {"sources": [source, kind, split, validation_loader, list(mix)], "micro_batch_size": micro_batch_size,
               "packing": packing, "padding_free": padding_free}
    validation = settings.validation if isinstance(settings.validation, str) else None

    def compute() -> Prepared:
        mixed = [(m["source"], load_rows(m["source"], m["kind"]), m["weight"]) for m in mix]
        return prepare_data(load_rows(source, kind, split=split), cache.loaded(tokenizer), settings, source=source,
                            validation_rows=load_rows(validation, validation_loader) if validation else None,
                            validation_source=validation or "validation", mix=mixed, micro_batch_size=micro_batch_size,
                            packing=packing, padding_free=padding_free)

    if not cache.holds(kind, mix):
        prepared = compute()
    else:
        from ftc.core.data.files import fingerprint

        data = fingerprint([source, validation, *(m["source"] for m in mix)], cache.hashes_file())
        chat = settings.format != "text" and not settings.template  # ChatML added when the tokenizer has no template
        key = cache.stage_key(data, cache.tokenizer_id(tokenizer, chat), settings, options)
        with cache.locked(key) as folder:
            stored = cache.load(folder) if folder is not None else None
            if stored is None:
                prepared = compute()
                if folder is not None:
                    cache.save(folder, prepared)
            else:
                prepared = Prepared(stored["train"], stored["validation"], stored["dropped"], stored["stats"],
                                    weighted_order=stored["weighted"], cached=str(folder))
    if report_dir is not None:
        write_report(prepared, Path(report_dir))
    return prepared


def shared_by_cache() -> bool:
    """Whether the processes of a run can each call `prepare_sources` for file data: the data cache can be
    written, so under its lock the first one builds the entry and the others wait, then open it (hub data is
    never cached: train.py hands it over as a file, ftc.runtime.ranks)."""
    return cache.writable()


def _second_source(tokenizer: Any, settings: DataSettings, sources: list[Source], encoded: list[Encoded],
                   held: Source, dropped: list[dict[str, Any]]) -> list[Encoded]:
    """The validation examples of a second source, prepared like the training rows; its examples
    that are also training examples are dropped whatever the settings (in_training_data)."""
    everything = sources + [held]
    seen = {key(e.example): (next(i for i, s in enumerate(sources) if s.name == e.source), e.row)
            for e in encoded}
    v_items = map_rows(everything, len(sources), settings, dropped)
    v_items = dedup(v_items, settings, everything, dropped, seen=seen)
    validation = length_filter(encode_all(tokenizer, v_items, settings, everything), settings, [held], dropped)
    if not validation:
        raise DataError(f"{held.name}: no validation example is left ({len(held.rows)} rows read; the "
                        "rest were dropped or are also training rows); use other rows for data.validation")
    return validation


def check_saved_tokenizer(path: Path, prepared: Prepared, settings: DataSettings, events: Any) -> bool:
    """Encode the first training example with the tokenizer saved beside the model and compare it
    with what was trained; a difference (another chat template, special tokens) is a warning event."""
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(path))
    item = prepared.train[0]
    try:
        again: dict[str, Any] | None = encode_example(saved, item.example, settings)
    except DataError:  # the saved template cannot even locate the answers
        again = None
    same = again is not None and all(again[k] == item.encoding[k] for k in ("input_ids", "labels"))
    if same and again is not None:
        print(f"saved tokenizer check: training row {item.row} encodes to the same {len(again['input_ids'])} "
              f"tokens with {path}", flush=True)
    else:
        events.write("warning", f"the tokenizer saved in {path} encodes training row {item.row} differently from "
                     "training (chat template or special tokens differ); inference will not see what was trained")
    return same
