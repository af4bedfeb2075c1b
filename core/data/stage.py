"""The data stage: rows -> examples -> cleaned -> encoded -> split, with every drop accounted for.

`train.py` and `ftc data` both call `prepare_sources`, so what `ftc data` shows is what trains. Steps,
one module each (its docstring says more; each drop is counted by reason and written to
`dropped.jsonl`): `mapping` (rows onto the format), `clean` (duplicates), `encode` and `batch` (tokens
and labels; then `clean`'s length filters), `split` (the held-out share, mixing weights), `stats`.
`flow` runs the first three a block of rows at a time and hands each encoded chunk to a sink: for
file data, the data cache's Arrow file (cache.py), so the first run holds a few blocks, the examples'
dedup keys and compact columns of numbers (stats.Columns), never every row or encoding, and the
trainer gets the memory-mapped table; `prepare_data` (rows given in memory: the compile-time
measurement, hub data, an unwritable cache) keeps them in lists. Both run `_stage`.

Torch-free; `datasets` is imported only to load saved/hub rows (`load`) and to hand the result to the
trainer. This module is the stage's front: train.py and `ftc data` import what they call from here.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.core.data import cache, flow
from ftc.core.data.cache import Stored
from ftc.core.data.encode import DataError, Encoded, encode_example
from ftc.core.data.load import DROP_REASONS, Source, load_rows, open_rows, rows_list
from ftc.core.data.settings import DataSettings
from ftc.core.data.split import held_out, weighted
from ftc.core.data.stats import Columns, changed_stats, report, source_stats, statistics, write_report

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


@dataclass
class _Result:
    """What `_stage` decided: `kept` holds the training sources' kept examples (a sink), `held` a
    validation source's; positions in `kept` of the training and validation examples; the training order
    of a mix (positions among the training examples)."""

    kept: Any
    held: Any
    train: list[int]
    validation: list[int]
    order: list[int] | None
    stats: dict[str, Any]
    dropped: list[dict[str, Any]]


class _Memory:
    """A sink holding the kept examples in a list (prepare_data)."""

    tokens_as_arrays = False  # the examples' token lists stay lists (the trainer's dataset is built from them)

    def __init__(self, index: dict[str, int]) -> None:
        self.items: list[Encoded] = []
        self.columns, self.index = Columns(), index

    def __call__(self, kept: list[Encoded]) -> None:
        self.items += kept
        self.columns.add(kept, self.index)


class _Arrow(_Memory):
    """A sink writing the kept examples to an Arrow file as they come (the cache entry being written)."""

    tokens_as_arrays = True  # it writes and counts the token lists, nothing else (flow.run)

    def __init__(self, path: Path, index: dict[str, int]) -> None:
        super().__init__(index)
        self.write = cache.Writer(path)

    def __call__(self, kept: list[Encoded]) -> None:
        self.write(kept)
        self.columns.add(kept, self.index)


def _stage(sources: list[Source], held: Source | None, tokenizer: Any, settings: DataSettings,
           sink: Callable[[str, dict[str, int]], Any], micro_batch_size: int, packing: bool,
           padding_free: bool) -> _Result:
    """The stage over `sources` (and a validation source `held`), its kept examples handed to sinks made by
    `sink(name, source positions)`; the split, the weights and the statistics from their compact columns."""
    if len({s.name for s in sources}) < len(sources):
        raise DataError(f"the same source is listed twice ({', '.join(s.name for s in sources)}); use weight "
                        "to repeat a source")
    dropped: list[dict[str, Any]] = []
    index = {s.name: i for i, s in enumerate(sources + ([held] if held is not None else []))}
    kept, keys = sink("kept", index), ({} if held is not None else None)
    flow.run(sources, range(len(sources)), tokenizer, settings, dropped, kept, keys=keys)
    rows_read, count = sum(s.count for s in sources), len(kept.columns)
    if not count:
        reasons = Counter(d["reason"] for d in dropped)
        raise DataError(f"{sources[0].name}: no example is left to train on ({rows_read} rows read; dropped: "
                        + (", ".join(f"{n} {r}" for r, n in reasons.items()) or "none") + ")"
                        + (f"; first problem, row {dropped[0]['row']}: {dropped[0]['detail']}" if dropped else ""))
    validation_sink, train, validation = None, list(range(count)), []
    if held is not None:
        validation_sink = sink("held", index)
        flow.run(sources + [held], [len(sources)], tokenizer, settings, dropped, validation_sink, seen=keys)
        rows_read += held.count
        if not len(validation_sink.columns):
            raise DataError(f"{held.name}: no validation example is left ({held.count} rows read; the rest were "
                            "dropped or are also training rows); use other rows for data.validation")
        held_columns = validation_sink.columns
    else:
        out = held_out(count, settings, sources[0].name)
        train, validation = [p for p in train if p not in out], sorted(out)
        held_columns = kept.columns.take(validation)
    train_columns = kept.columns.take(train)
    order = weighted(train_columns["source"].tolist(), [s.weight for s in sources], settings.seed) \
        if len(sources) > 1 else None
    trained = train_columns.take(order) if order is not None else train_columns
    stats = statistics(trained, held_columns, dropped, rows_read, settings, micro_batch_size, packing, padding_free)
    if order is not None:
        stats["sources"] = source_stats(sources, train_columns, trained)
    stats["changed"] = changed_stats(sources)
    return _Result(kept, validation_sink, train, validation, order, stats, dropped)


def _held(settings: DataSettings, rows: Any, name: str) -> Source | None:
    """The validation source (data.validation names one), None when a share is held out instead."""
    if isinstance(settings.validation, str) or rows is not None:
        return Source(name, rows if rows is not None else [])
    return None


def prepare_data(rows: Any, tokenizer: Any, settings: DataSettings, *, source: str = "data",
                 validation_rows: Any = None, validation_source: str = "validation",
                 mix: Sequence[tuple[str, Any, float]] = (), report_dir: Path | None = None,
                 micro_batch_size: int = 1, packing: bool = False, padding_free: bool = False) -> Prepared:
    """Map, clean, encode and split `rows` (and the `mix` sources: (name, rows, weight)), every example
    held in memory; write dropped.jsonl and stats.json to `report_dir`."""
    sources = [Source(source, rows_list(rows))] + [Source(name, rows_list(r), w) for name, r, w in mix]
    held = _held(settings, rows_list(validation_rows) if validation_rows is not None else None, validation_source)
    result = _stage(sources, held, tokenizer, settings, lambda name, index: _Memory(index), micro_batch_size,
                    packing, padding_free)
    items = result.kept.items
    train = [items[p] for p in result.train]
    validation = result.held.items if result.held is not None else [items[p] for p in result.validation]
    for item in validation:
        item.split = "validation"
    weighted_train = [train[p] for p in result.order] if result.order is not None else []
    prepared = Prepared(train, validation, result.dropped, result.stats, weighted_train)
    if report_dir is not None:
        write_report(prepared, Path(report_dir))
    return prepared


def _into_cache(folder: Path, sources: list[Source], held: Source | None, tokenizer: Any, settings: DataSettings,
                **options: Any) -> bool:
    """Run the stage with its examples streamed into the cache entry `folder` (False: the disk refused it)."""
    partial = cache.partial_folder(folder)
    sinks: list[_Arrow] = []

    def sink(name: str, index: dict[str, int]) -> _Arrow:
        sinks.append(_Arrow(partial / f"{name}.arrow", index))
        return sinks[-1]

    try:
        try:
            result = _stage(sources, held, tokenizer, settings, sink, **options)
        finally:
            for made in sinks:
                made.write.close()
        if result.held is not None:  # every kept example trains; the validation source's are held
            os.replace(partial / "kept.arrow", partial / "train.arrow")
            cache.split_file(partial / "held.arrow", {"validation": (partial / "validation.arrow",
                                                                     range(len(result.held.columns)))})
        else:
            cache.split_file(partial / "kept.arrow", {"train": (partial / "train.arrow", result.train),
                                                      "validation": (partial / "validation.arrow", result.validation)})
        for name in ("kept.arrow", "held.arrow"):
            (partial / name).unlink(missing_ok=True)
        cache.finish(partial, folder, {"stats": result.stats, "weighted": result.order}, result.dropped)
        return True
    except OSError:  # a full or read-only disk: computed again in memory, just not kept
        shutil.rmtree(partial, ignore_errors=True)
        return False
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def prepare_sources(tokenizer: Any, settings: DataSettings, *, source: str, kind: str | None, split: str = "train",
                    validation_loader: str | None = None, mix: Sequence[dict[str, Any]] = (),
                    report_dir: Path | None = None, micro_batch_size: int = 1, packing: bool = False,
                    padding_free: bool = False) -> Prepared:
    """Read the sources (ftc.core.data.read) and run the stage, streaming its examples into the data cache
    (cache.py) and handing the trainer the memory-mapped result; or take the cache's entry when the data's
    bytes, the tokenizer and every setting are the same. Hub data, or a cache that cannot be written, run
    `prepare_data` in memory. `tokenizer` may be a cache.Deferred one, loaded only on a miss."""
    options = {"sources": [source, kind, split, validation_loader, list(mix)], "micro_batch_size": micro_batch_size,
               "packing": packing, "padding_free": padding_free}
    stage_options = {"micro_batch_size": micro_batch_size, "packing": packing, "padding_free": padding_free}
    validation = settings.validation if isinstance(settings.validation, str) else None

    def compute() -> Prepared:
        mixed = [(m["source"], load_rows(m["source"], m["kind"]), m["weight"]) for m in mix]
        return prepare_data(load_rows(source, kind, split=split), cache.loaded(tokenizer), settings, source=source,
                            validation_rows=load_rows(validation, validation_loader) if validation else None,
                            validation_source=validation or "validation", mix=mixed, **stage_options)

    def streamed(folder: Path) -> bool:
        sources = [Source(source, open_rows(source, kind, split))] + \
            [Source(m["source"], open_rows(m["source"], m["kind"]), m["weight"]) for m in mix]
        held = _held(settings, open_rows(validation, validation_loader) if validation else None,
                     validation or "validation")
        return _into_cache(folder, sources, held, cache.loaded(tokenizer), settings, **stage_options)

    if not cache.holds(kind, mix):
        prepared = compute()
    else:
        from ftc.core.data.files import fingerprint

        data = fingerprint([source, validation, *(m["source"] for m in mix)], cache.hashes_file())
        chat = settings.format != "text" and not settings.template  # ChatML added when the tokenizer has no template
        key = cache.stage_key(data, cache.tokenizer_id(tokenizer, chat), settings, options)
        with cache.locked(key) as folder:
            stored = cache.load(folder) if folder is not None else None
            if stored is None and folder is not None and streamed(folder):
                fresh = cache.load(folder)
                prepared = compute() if fresh is None else \
                    Prepared(fresh["train"], fresh["validation"], fresh["dropped"], fresh["stats"],
                             weighted_order=fresh["weighted"])
            elif stored is None:
                prepared = compute()
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
