"""Reading rows, and the bookkeeping every later step shares: which source a row came from, how a
row is named in a message, and how a dropped row is recorded (with its reason and data)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ftc.core.data.encode import DataError
from ftc.core.data.read import LINE_FORMATS, Places, Rows, Streamed, read_files

DROP_REASONS = ("malformed", "empty", "duplicate", "near_duplicate", "too_short", "too_long", "untrained",
                "in_training_data")


def load_rows(source: str, kind: str | None, split: str = "train") -> Rows:
    """Rows of a source, in a list: `kind` is json/csv/parquet/text (files or a glob, read by
    ftc.core.data.read, every value as its file types it), saved (save_to_disk) or hub."""
    if kind not in ("saved", "hub"):
        return read_files(source, kind)
    return Rows(_dataset(source, kind, split).to_list())


def open_rows(source: str, kind: str | None, split: str = "train") -> Any:
    """The rows of a source without holding them all: files are read as they are iterated (read.Streamed), a
    saved dataset stays memory-mapped Arrow; a hub dataset is a list (load_rows)."""
    if kind not in ("saved", "hub"):
        return Streamed(source, kind)
    return _dataset(source, kind, split) if kind == "saved" else load_rows(source, kind, split)


def _dataset(source: str, kind: str, split: str) -> Any:
    import datasets

    datasets.disable_progress_bars()
    try:
        if kind == "saved":
            rows = datasets.load_from_disk(source)
            if isinstance(rows, datasets.DatasetDict):
                if split not in rows:
                    raise DataError(f"{source}: no split {split!r} (splits: {', '.join(rows)}); set data.split")
                rows = rows[split]
        else:
            rows = datasets.load_dataset(source, split=split)
        return rows
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot read"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "a dataset folder saved by datasets (save_to_disk); its dataset_info.json or state.json may be " \
            "broken: save it again" if kind == "saved" else "a hub dataset"
        raise DataError(f"{source}: cannot be read as {what} ({type(exc).__name__}: {message})") from None


@dataclass
class Source:
    """One source's rows, as read, with its mixing weight."""

    name: str
    rows: Any
    """A list of rows (Rows: with where each came from), or read.Streamed (read once, when iterated)."""
    weight: float = 1.0
    changed: dict[str, list[int]] = field(default_factory=dict)
    """Rows changed while mapped: "converted" (numbers or booleans made text, mapping.as_text) and
    "trimmed" (a conversation cut after its last answer)."""
    places: Places = field(default_factory=Places)
    """Where each row came from (for Streamed rows, filled as they are read)."""

    def __post_init__(self) -> None:
        if isinstance(self.rows, Rows):
            self.places = self.rows.places

    def numbered(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number in the source, 1-based; row), in order."""
        if not isinstance(self.rows, Streamed):
            yield from enumerate(self.rows, start=1)
            return
        for file, number, row in self.rows:
            self.places.add(file, number)
            yield self.places.count, row

    @property
    def count(self) -> int:
        """Rows read (all of them once `numbered` has been iterated)."""
        return self.places.count if isinstance(self.rows, Streamed) else len(self.rows)

    def place(self, number: int) -> tuple[str, int]:
        """(file, row in that file) of the source's row `number`: the file's own line or row number."""
        file, row = self.places.place(number)
        return file or self.name, row

    def label(self, number: int) -> str:
        """How a row is named in a message: `file:line` for line-based files, `file, row N` otherwise."""
        file, row = self.place(number)
        return f"{file}:{row}" if file.endswith(LINE_FORMATS) else f"{file}, row {row}"

    def rows_text(self, numbers: Sequence[int], limit: int = 10) -> str:
        """Rows named for a message: their numbers in their file (with the file when there are several)."""
        several = len(self.places.files) > 1
        shown = [f"{f} row {r}" if several else str(r) for f, r in (self.place(n) for n in numbers[:limit])]
        return ", ".join(shown) + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


Item = tuple[int, int, dict[str, Any]]  # (source index, row number, example)


def rows_list(rows: Iterable[dict[str, Any]] | Any) -> list[dict[str, Any]]:
    if isinstance(rows, Rows):
        return rows
    if hasattr(rows, "to_list"):
        return list(rows.to_list())
    return list(rows)


def drop_row(dropped: list[dict[str, Any]], source: Source, number: int, reason: str, detail: str,
             data: Any = None) -> None:
    """Record a dropped row with its reason and `data` (the row as read; from a listed source's rows by default)."""
    file, row = source.place(number)
    dropped.append({"source": source.name, "row": row, "reason": reason, "detail": detail,
                    "data": source.rows[number - 1] if data is None else data}
                   | ({"file": file} if file != source.name else {}))


def where(sources: list[Source], index: int, number: int, of: int) -> str:
    """A row named for a message about another row of source `of`: its file's row, with the file when
    it is another source's or the source has several files."""
    source = sources[index]
    file, row = source.place(number)
    several = len(source.places.files) > 1
    return f"row {row}" if index == of and not several else f"{file} row {row}"
