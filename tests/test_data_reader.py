"""The one row reader (ftc.core.data.read): types kept in every format, encodings, and bad files
refused with the file and the row, never a traceback or a hang."""

from __future__ import annotations

import csv
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings

from ftc.core.data.encode import DataError
from ftc.core.data.files import expand, fingerprint
from ftc.core.data.load import load_rows
from ftc.core.data.stage import prepare_data
from ftc.core.errors import DataProblem

DATES = [{"instruction": "When?", "output": "2031-05-07"}, {"instruction": "Id?", "output": "00042"},
         {"instruction": "Count?", "output": 42}, {"instruction": "Sure?", "output": True}]


def write_all_formats(directory: Path, rows: list[dict[str, Any]]) -> dict[str, Path]:
    """The rows as .jsonl, .json, .csv and .parquet (a mixed-type column in each one that can hold it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {kind: directory / f"d.{kind}" for kind in ("jsonl", "json", "csv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    paths["json"].write_text(json.dumps(rows), encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # Parquet columns have one type per file: a glob of two files types "output" differently
    pq.write_table(pa.Table.from_pylist([r | {"output": str(r["output"])} for r in rows[:2]]), paths["parquet"])
    pq.write_table(pa.Table.from_pylist([{"instruction": "n?", "output": 7}]), directory / "e.parquet")
    return paths


def test_strings_stay_strings_and_numbers_are_converted_and_counted(tmp_path: Path, tiny_tokenizer: Any) -> None:
    paths = write_all_formats(tmp_path, DATES)
    settings = data_settings("instruction", 64)
    for kind, path in paths.items():
        source = str(tmp_path / "*.parquet") if kind == "parquet" else str(path)
        rows = load_rows(source, kind if kind != "jsonl" else "json")
        assert rows[0]["output"] == "2031-05-07" and rows[1]["output"] == "00042", kind
        prepared = prepare_data(rows, tiny_tokenizer, settings, source=source)
        assert prepared.stats["dropped"]["malformed"] == 0, kind
        answers = [e.example["messages"][-1]["content"] for e in prepared.train]
        assert answers[:2] == ["2031-05-07", "00042"], kind
        converted = prepared.stats["changed"]["converted"]["rows"]
        # JSON keeps 42 and true as a number and a boolean (converted); CSV cells are text; Parquet: one 7
        assert converted == {"jsonl": 2, "json": 2, "csv": 0, "parquet": 1}[kind], kind
    rows = load_rows(str(paths["jsonl"]), "json")
    assert prepare_data(rows, tiny_tokenizer, settings).train[3].example["messages"][-1]["content"] == "true"


def test_nan_and_infinity_where_text_is_expected_drop_the_row(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": NaN, "score": Infinity}\n{"instruction": "b", "output": "ok", '
                    '"score": NaN}\n', encoding="utf-8")
    prepared = prepare_data(load_rows(str(path), "json"), tiny_tokenizer, data_settings("instruction", 64))
    assert len(prepared.train) == 1 and prepared.dropped[0]["row"] == 1
    assert "non-finite number" in prepared.dropped[0]["detail"]


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_a_bom_and_utf16_are_read(tmp_path: Path, encoding: str) -> None:
    rows = [{"text": "café"}, {"text": "naïve"}]
    for suffix, text in ((".jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
                         (".csv", "text\ncafé\nnaïve\n"), (".txt", "café\nnaïve\n")):
        path = tmp_path / f"d{suffix}"
        path.write_text(text, encoding=encoding)
        assert load_rows(str(path), "text" if suffix == ".txt" else "json") == rows, suffix


def test_utf32_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n', encoding="utf-32")
    with pytest.raises(DataError, match=r"d.jsonl: UTF-32 text; .*iconv -f utf-32 -t utf-8"):
        load_rows(str(tmp_path / "d.jsonl"), "json")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt", ".json"])
def test_latin1_is_refused_naming_the_encoding_and_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    text = {".jsonl": '{"text": "a"}\n{"text": "café"}\n', ".csv": "text\na\ncafé\n", ".txt": "a\ncafé\n",
            ".json": '[{"text": "a"},\n {"text": "café"}]'}[suffix]
    path.write_bytes(text.encode("latin-1"))
    line = {".csv": 3}.get(suffix, 2)
    with pytest.raises(DataError, match=rf"d{suffix}:{line}: not UTF-8 text \(byte 0xe9.*latin-1"):
        load_rows(str(path), "text" if suffix == ".txt" else "json")


@pytest.mark.parametrize(("line", "message"), [
    ("[1, 2]", r"d.jsonl:1500: a row must be a JSON object .*got an array"),
    ("7", r"d.jsonl:1500: a row must be a JSON object .*got a number"),
    ('{"text": ', r"d.jsonl:1500: not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, r"d.jsonl:1500: nested deeper than 64 levels"),
    ('{"a": ' * 200 + "1" + "}" * 200, r"d.jsonl:1500: nested deeper than 64 levels"),
])
def test_a_bad_row_anywhere_is_refused_with_its_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "fine"}\n' * 1499 + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        load_rows(str(path), "json")
    assert isinstance(caught.value, DataProblem) and caught.value.exit_code == 2


def test_rows_that_are_not_objects_in_json_csv_rows_too_wide(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('[{"text": "a"}, "b"]', encoding="utf-8")
    with pytest.raises(DataError, match=r"d.json, row 2: a row must be a JSON object .*got a string"):
        load_rows(str(tmp_path / "d.json"), "json")
    (tmp_path / "d.csv").write_text("text\na\nb,c\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"d.csv:3: 2 cells, but the header names 1 columns"):
        load_rows(str(tmp_path / "d.csv"), "csv")


def test_a_csv_cell_over_the_csv_modules_limit(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text\nshort\n" + "x" * 200_000 + "\n", encoding="utf-8")  # csv's own limit is 131,072
    assert load_rows(str(path), "csv")[1]["text"] == "x" * 200_000
    from ftc.core.data import read

    original = read.CSV_FIELD_LIMIT
    csv.field_size_limit(1000)
    read.CSV_FIELD_LIMIT = 1000
    try:
        with pytest.raises(DataError, match=r"d.csv:3: a cell longer than 1,000 characters"):
            load_rows(str(path), "csv")
    finally:
        read.CSV_FIELD_LIMIT = original
        csv.field_size_limit(original)


@pytest.mark.parametrize("content", [b"", b"PAR1", b"not parquet at all", None])
def test_corrupt_empty_and_truncated_parquet(tmp_path: Path, content: bytes | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    if content is None:  # truncated: a real file cut in half
        pq.write_table(pa.Table.from_pylist([{"text": f"row {i}"} for i in range(100)]), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=r"d.parquet: not a readable Parquet file"):
        load_rows(str(path), "parquet")


def test_a_saved_dataset_with_a_broken_info_file(tmp_path: Path) -> None:
    from datasets import Dataset

    Dataset.from_list([{"text": "a"}]).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "saved" / "dataset_info.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(DataError, match=r"saved: cannot be read as a dataset folder saved by datasets"):
        load_rows(str(tmp_path / "saved"), "saved")


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "d.jsonl"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            load_rows(str(fifo), "json")
        except BaseException as exc:  # noqa: BLE001 - the test looks at what was raised
            result.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "reading a FIFO hung"
    assert isinstance(result[0], DataError) and "a FIFO, not a regular file" in str(result[0])


def test_a_recursive_glob_does_not_follow_link_loops(tmp_path: Path) -> None:
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "a" / "x.jsonl").write_text('{"text": "a"}\n', encoding="utf-8")
    (tmp_path / "data" / "top.jsonl").write_text('{"text": "b"}\n', encoding="utf-8")
    os.symlink(tmp_path / "data", tmp_path / "data" / "a" / "loop")
    os.symlink(tmp_path / "data" / "a", tmp_path / "data" / "a" / "again")
    files = expand(str(tmp_path / "data" / "**" / "*.jsonl"))
    assert files == [str(tmp_path / "data" / "a" / "x.jsonl"), str(tmp_path / "data" / "top.jsonl")]
    rows = load_rows(str(tmp_path / "data" / "**" / "*.jsonl"), "json")
    assert rows == [{"text": "a"}, {"text": "b"}] and rows.place(2) == (str(tmp_path / "data" / "top.jsonl"), 1)


def test_rows_are_named_by_their_file_and_line_in_a_glob(tmp_path: Path, tiny_tokenizer: Any) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n', encoding="utf-8")
    (tmp_path / "b.jsonl").write_text('{"text": "one"}\n{"text": ""}\n', encoding="utf-8")
    prepared = prepare_data(load_rows(str(tmp_path / "*.jsonl"), "json"), tiny_tokenizer, data_settings("text", 64))
    found = {(Path(d["file"]).name, d["row"], d["reason"]) for d in prepared.dropped}
    assert found == {("b.jsonl", 1, "duplicate"), ("b.jsonl", 2, "empty")}
    assert "a.jsonl row 1" in next(d["detail"] for d in prepared.dropped if d["reason"] == "duplicate")


def test_a_conversation_ending_with_a_question_is_trimmed_to_its_last_answer(tiny_tokenizer: Any) -> None:
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                               {"from": "human", "value": "and then?"}]}]
    prepared = prepare_data(rows, tiny_tokenizer, data_settings("chat", 64, columns={"messages": "conversations"}))
    assert [m["content"] for m in prepared.train[0].example["messages"]] == ["hi", "hello"]
    assert prepared.stats["changed"]["trimmed"]["rows"] == 1


def test_the_fingerprint_is_remembered_and_notices_a_changed_byte(tmp_path: Path) -> None:
    path, hashes = tmp_path / "d.jsonl", tmp_path / "cache" / "hashes.json"
    path.write_text('{"text": "a"}\n', encoding="utf-8")
    os.utime(path, ns=(1, 10**18))  # modified long enough ago for its hash to be remembered
    first = fingerprint([str(path)], hashes)
    assert json.loads(hashes.read_text())[str(path)][2]
    assert fingerprint([str(path)], hashes) == first
    path.write_text('{"text": "b"}\n', encoding="utf-8")  # same size, one byte changed, a new time
    assert fingerprint([str(path)], hashes) != first


def test_compile_refuses_a_fifo_and_a_broken_saved_dataset(tmp_path: Path) -> None:
    from ftc.compiler.facts import FactError, data_facts

    os.mkfifo(tmp_path / "d.jsonl")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "dataset_info.json").write_text('{"x":', encoding="utf-8")
    with pytest.raises(FactError, match="d.jsonl: a FIFO, not a regular file"):
        data_facts(str(tmp_path / "d.jsonl"))
    with pytest.raises(FactError, match=r"dataset_info.json: broken \(JSONDecodeError"):
        data_facts(str(tmp_path / "saved"))
