"""The one row reader: data files -> rows, for `ftc compile`, `ftc data` and train.py alike.

Every value keeps the type its file gives it: a JSON string stays a string (no type inference, so
"2031-05-07" or "00042" is text), a JSON number a number; CSV cells are always text; Parquet
columns keep their own types, and files of one glob may type a column differently. What a value
must be is decided later, by the format's mapping (mapping.py: numbers and booleans where text is
expected are converted and counted; see docs/spec.md, "Data files").

Refused, with the file and the row (the line for .jsonl, .csv and .txt; the element of a .json
list; the row of a .parquet file): a line that is not JSON, a row that is not an object, a row
nested deeper than MAX_DEPTH, a CSV row with more cells than its header, a field over
CSV_FIELD_LIMIT, text that is not UTF-8 (a UTF-8 BOM and UTF-16 with a BOM are read; latin-1 and
other encodings are refused with a conversion hint), a corrupt or truncated Parquet file, and a
path that is not a regular file (a FIFO or a device is never opened, so nothing hangs).

`read_files` returns a source's rows as a list (Rows); `Streamed` reads them as they are iterated (the
data stage's first run over file data, which never holds them all).
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import stat
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ftc.core.data.encode import DataError
from ftc.core.data.files import expand

MAX_DEPTH = 64  # nesting of lists/objects in one row; deeper rows are refused (recursion stays bounded)
CSV_FIELD_LIMIT = 64 << 20  # characters in one CSV cell
LINE_FORMATS = (".jsonl", ".csv", ".txt")  # rows named by their line; .json and .parquet by their position


class Places:
    """Where a source's rows came from: per file, (file, index of its first row in the source, the row
    numbers in that file); `count` rows in all (rows without a file, e.g. a saved dataset's, count too)."""

    def __init__(self) -> None:
        self.files: list[tuple[str, int, array]] = []
        self.count = 0

    def add(self, file: str | None, number: int) -> None:
        if file is not None:
            if not self.files or self.files[-1][0] != file:
                self.files.append((file, self.count, array("q")))
            self.files[-1][2].append(number)
        self.count += 1

    def place(self, number: int) -> tuple[str | None, int]:
        """(file, row in that file) of the source's row `number` (1-based); (None, number) when unknown."""
        for file, start, numbers in reversed(self.files):
            if number - 1 >= start:
                return file, numbers[number - 1 - start]
        return None, number


class Rows(list):  # type: ignore[type-arg]
    """The rows of a source (a list of dicts), with where each came from (`places`)."""

    def __init__(self, rows: Iterable[dict[str, Any]] = (), places: Places | None = None):
        super().__init__(rows)
        self.places = places or Places()

    def place(self, number: int) -> tuple[str | None, int]:
        """(file, row in that file) of row `number` (1-based); (None, number) when unknown."""
        return self.places.place(number)


class Streamed:
    """The rows of a source's files, read when iterated (never all in memory): (file, row number in the
    file, row), in order. See the module docstring for what is refused."""

    def __init__(self, source: str, loader: str | None) -> None:
        self.files = expand(source)
        if not self.files:
            raise DataError(f"{source}: no data file found (the pattern matches nothing)")
        self.loader = loader

    def __iter__(self) -> Iterator[tuple[str, int, dict[str, Any]]]:
        for file in self.files:
            for number, row in read_file(file, self.loader):
                yield file, number, row


def check_regular(path: str) -> None:
    """Refuse a path that is not a regular file (a FIFO, a socket or a device would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a directory" if stat.S_ISDIR(mode) else "a special file"
        raise DataError(f"{path}: {kind}, not a regular file; point data.source at a data file")


def read_files(source: str, loader: str | None, limit: int | None = None) -> Rows:
    """The rows of a file, a directory's glob or a glob (the first `limit` ones when given)."""
    files = expand(source)
    if not files:
        raise DataError(f"{source}: no data file found (the pattern matches nothing)")
    return read_paths(files, loader, limit)


def read_paths(files: Iterable[str], loader: str | None, limit: int | None = None) -> Rows:
    """The rows of these files, in order (the first `limit` ones when given)."""
    rows = Rows()
    for file in files:
        if limit is not None and len(rows) >= limit:
            break
        for number, row in read_file(file, loader, None if limit is None else limit - len(rows)):
            rows.append(row)
            rows.places.add(file, number)
    return rows


def read_file(path: str, loader: str | None = None, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) of one data file, in order; see the module docstring for what is refused."""
    check_regular(path)
    suffix = Path(path).suffix
    kind = "text" if loader == "text" or suffix == ".txt" else suffix.lstrip(".")
    reader = {"jsonl": _jsonl, "json": _json, "csv": _csv, "parquet": _parquet, "text": _text}.get(kind)
    if reader is None:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv, .parquet or .txt")
    count = 0
    for number, row in reader(path):
        if limit is not None and count >= limit:
            return
        count += 1
        yield number, row


# ---------------------------------------------------------------------------- text and its encoding
def encoding_of(path: str) -> str:
    """The text encoding the reader decodes `path` with (from its BOM; UTF-8 without one)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):  # before UTF-16: FF FE 00 00 starts with FF FE
        raise DataError(f"{path}: UTF-32 text; ftc reads UTF-8 (with or without a BOM) and UTF-16 with a BOM; "
                        f"convert it: iconv -f utf-32 -t utf-8 {path}")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8"


def lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a text file, decoded; a byte that is not UTF-8 is refused with its line."""
    encoding = encoding_of(path)
    if encoding == "utf-16":
        with open(path, encoding="utf-16", newline="") as text:
            try:
                yield from enumerate(text, start=1)
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}: not valid UTF-16 ({exc.reason}); convert it to UTF-8") from None
        return
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and encoding == "utf-8-sig":
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                                f"{exc.start + 1}); ftc reads UTF-8 (with or without a BOM) and UTF-16 with a BOM; "
                                f"if the file is latin-1 (or cp1252), convert it: iconv -f latin1 -t utf-8 {path} "
                                "> converted file") from None


# ---------------------------------------------------------------------------- formats
def _depth_ok(value: Any) -> bool:
    """Whether `value` nests at most MAX_DEPTH lists/objects (iteratively: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return True


def _row(path: str, where: str, text: str | None, value: Any = None) -> dict[str, Any]:
    """One row, parsed from JSON `text` (or given as `value`), checked to be a not too deep object."""
    if text is not None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line of a "
                            ".jsonl file must be one JSON object") from None
        except RecursionError:
            raise DataError(f"{path}{where}: nested deeper than {MAX_DEPTH} levels; flatten the row") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}{where}: a row must be a JSON object with the data's columns (got "
                        f"{_json_kind(value)}); write one object per row")
    if (text is None or text.count("[") + text.count("{") > MAX_DEPTH) and not _depth_ok(value):
        raise DataError(f"{path}{where}: nested deeper than {MAX_DEPTH} levels; flatten the row")
    return value


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in lines(path):
        if line.strip():
            yield number, _row(path, f":{number}", line)


def _json(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    text = "".join(line for _, line in lines(path))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); if the file holds one object per "
                        "line, name it .jsonl") from None
    except RecursionError:
        raise DataError(f"{path}: nested deeper than {MAX_DEPTH} levels; flatten the rows") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        raise DataError(f"{path}: the rows are nested under a key; save them as a top-level JSON list or as .jsonl")
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json data file must hold a list of objects (got {_json_kind(data)})")
    for number, value in enumerate(data, start=1):
        yield number, _row(path, f", row {number}", None, value)


def _csv(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    source = lines(path)
    counted = iter(line for _, line in source)
    reader = csv.reader(counted)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = (f"a cell longer than {CSV_FIELD_LIMIT:,} characters; store long texts in .jsonl or .parquet"
                       if "field larger than field limit" in str(exc) else f"not valid CSV ({exc})")
            raise DataError(f"{path}:{reader.line_num}: {problem}") from None
        number, start = start, reader.line_num + 1
        if not cells:
            continue
        if header is None:
            header = cells
            continue
        if len(cells) > len(header):
            raise DataError(f"{path}:{number}: {len(cells)} cells, but the header names {len(header)} columns; "
                            "quote cells that hold commas")
        yield number, {name: cells[i] if i < len(cells) else None for i, name in enumerate(header)}


def _parquet(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        number = 0
        for batch in file.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable Parquet file ({first}); it may be empty, truncated or not "
                        "Parquet; write it again (e.g. pandas.DataFrame.to_parquet)") from None


def _text(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in lines(path):
        yield number, {"text": line.rstrip("\r\n")}
