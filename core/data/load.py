"""Reading rows, and the bookkeeping every later step shares: which source a row came from, how a
row is named in a message, and how a dropped row is recorded (with its reason and data)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ftc.core.data.encode import DataError

DROP_REASONS = ("malformed", "empty", "duplicate", "near_duplicate", "too_short", "too_long", "untrained",
                "in_training_data")


def load_rows(source: str, kind: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a source: `kind` is json/csv/parquet (files or a glob), saved (save_to_disk) or hub."""
    import datasets

    datasets.disable_progress_bars()
    try:
        if kind == "saved":
            rows = datasets.load_from_disk(source)
            if isinstance(rows, datasets.DatasetDict):
                if split not in rows:
                    raise DataError(f"{source}: no split {split!r} (splits: {', '.join(rows)}); set data.split")
                rows = rows[split]
        elif kind == "hub":
            rows = datasets.load_dataset(source, split=split)
        else:
            rows = datasets.load_dataset(kind, data_files=source, split="train")
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot read"
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{source}: cannot be read as {kind} data ({type(exc).__name__}: {message}); check the "
                        "file's format and encoding (UTF-8)") from None
    return list(rows.to_list())


@dataclass
class Source:
    """One source's rows, as read, with its mixing weight."""

    name: str
    rows: list[dict[str, Any]]
    weight: float = 1.0


Item = tuple[int, int, dict[str, Any]]  # (source index, row number, example)


def rows_list(rows: Iterable[dict[str, Any]] | Any) -> list[dict[str, Any]]:
    if hasattr(rows, "to_list"):
        return list(rows.to_list())
    return list(rows)


def drop_row(dropped: list[dict[str, Any]], source: Source, number: int, reason: str, detail: str) -> None:
    dropped.append({"source": source.name, "row": number, "reason": reason, "detail": detail,
                    "data": source.rows[number - 1]})


def rows_text(numbers: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def where(sources: list[Source], index: int, number: int, of: int) -> str:
    return f"row {number}" if index == of else f"{sources[index].name} row {number}"
