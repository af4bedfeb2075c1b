"""The data cache (a second `ftc data`, a resume and other ranks reuse the prepared data) and the
stage's worker processes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings

from ftc.core.data import parallel
from ftc.core.data.stage import prepare_data, prepare_sources
from ftc.core.data.load import load_rows

ROWS = [{"conversations": [{"from": "human", "value": f"say {w} {i}"}, {"from": "gpt", "value": f"{w.upper()}"}]}
        for i in range(30) for w in ("red", "green")] + [{"conversations": [{"from": "human", "value": "x"}]}]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.utime(path, ns=(1, time.time_ns() - 10**10))  # old enough for its hash to be remembered
    return path


def prepare(path: Path, tokenizer: Any, tmp_path: Path, **options: Any) -> Any:
    settings = data_settings("chat", 64, columns={"messages": "conversations"}, validation=0.1)
    return prepare_sources(tokenizer, settings, source=str(path), kind="json", report_dir=tmp_path / "report",
                           micro_batch_size=2, **options)


def test_a_second_run_reads_the_cache_and_a_changed_byte_misses_it(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = write(tmp_path / "d.jsonl", ROWS)
    first = prepare(path, tiny_tokenizer, tmp_path)
    assert first.cached is None and first.stats["dropped"]["malformed"] == 1
    again = prepare(path, tiny_tokenizer, tmp_path)
    assert again.cached is not None and again.stats == first.stats and again.dropped == first.dropped
    for split in ("train", "validation"):
        assert again.dataset(split).to_dict() == first.dataset(split).to_dict()
    assert [e.example for e in again.train[:3]] == [e.example for e in first.train[:3]]
    assert again.conversations() == first.conversations()
    assert json.loads((tmp_path / "report" / "stats.json").read_text()) == first.stats
    assert prepare(path, tiny_tokenizer, tmp_path, packing=True).cached is None  # another setting: another entry
    write(path, ROWS[:-1] + [{"conversations": [{"from": "human", "value": "y"}]}])  # same size, one byte changed
    assert prepare(path, tiny_tokenizer, tmp_path).cached is None


def test_a_weighted_mix_trains_the_same_rows_from_the_cache(tmp_path: Path, tiny_tokenizer: Any) -> None:
    path = write(tmp_path / "d.jsonl", ROWS[:20])
    extra = write(tmp_path / "e.jsonl", ROWS[20:40])
    mix = [{"source": str(extra), "kind": "json", "weight": 2.5}]
    first = prepare(path, tiny_tokenizer, tmp_path, mix=mix)
    again = prepare(path, tiny_tokenizer, tmp_path, mix=mix)
    assert again.cached is not None and again.dataset("train").to_dict() == first.dataset("train").to_dict()


def test_workers_encode_exactly_what_one_process_does(tmp_path: Path, tiny_tokenizer: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    rows = load_rows(str(write(tmp_path / "d.jsonl", ROWS)), "json")
    settings = data_settings("chat", 64, columns={"messages": "conversations"})
    one = prepare_data(rows, tiny_tokenizer, settings)
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 10)
    monkeypatch.setattr(parallel, "CHUNK", 7)
    monkeypatch.setenv("FTC_DATA_PROCS", "2")
    several = prepare_data(rows, tiny_tokenizer, settings)
    assert [e.encoding for e in several.train] == [e.encoding for e in one.train]
    bad = rows + [{"conversations": [{"from": "alien", "value": "?"}, {"from": "gpt", "value": "!"}]}]
    with pytest.raises(Exception, match="alien"):
        prepare_data(bad, tiny_tokenizer, settings)


def test_workers_return_results_in_order_and_stop_at_the_first_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 10)
    monkeypatch.setattr(parallel, "CHUNK", 4)

    def squares(chunk: list[int]) -> list[object]:
        out: list[object] = []
        for n in chunk:
            if n == 15:
                return out + [ValueError("row 15")]
            out.append(n * n)
        return out

    assert parallel.map_chunks(squares, list(range(15)), procs=2) == [n * n for n in range(15)]
    out = parallel.map_chunks(squares, list(range(40)), procs=2)
    assert out[:15] == [n * n for n in range(15)] and isinstance(out[15], ValueError) and len(out) == 16
    serial = parallel.map_chunks(squares, list(range(40)), procs=1)
    assert serial[:15] == out[:15] and isinstance(serial[15], ValueError) and len(serial) == 16


def test_the_compile_time_measurement_is_remembered_until_a_byte_changes(tiny_model: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from ftc.compiler import compile_spec, tokens

    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model, tmp_path / "tiny")
    write(tmp_path / "d.jsonl", ROWS)
    (tmp_path / "s.toml").write_text('[model]\nbase = "tiny"\n[data]\nsource = "d.jsonl"\nformat = "chat"\n'
                                     'max_length = "auto"\n[data.columns]\nmessages = "conversations"\n'
                                     '[method]\nkind = "lora"\n[hardware]\ndevice = "cpu"\n')
    calls: list[int] = []
    measure = tokens._measure
    monkeypatch.setattr(tokens, "_measure", lambda *a: calls.append(1) or measure(*a))
    first = compile_spec(tmp_path / "s.toml").plan["max_length"]
    assert compile_spec(tmp_path / "s.toml").plan["max_length"] == first and len(calls) == 1
    write(tmp_path / "d.jsonl", ROWS + [{"conversations": [{"from": "human", "value": "long " * 40},
                                                             {"from": "gpt", "value": "ok"}]}])
    assert compile_spec(tmp_path / "s.toml").plan["max_length"] > first and len(calls) == 2


def test_ranks_share_data_through_the_cache_only_where_it_can_be_written(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.core.data.stage import shared_by_cache

    monkeypatch.setenv("FTC_DATA_CACHE", str(tmp_path / "cache"))
    assert shared_by_cache() and (tmp_path / "cache").is_dir()
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("FTC_DATA_CACHE", str(tmp_path / "a-file" / "cache"))
    assert not shared_by_cache()  # train.py then hands local rank 0's result over as a file (runtime/ranks.py)


def test_a_cache_hit_does_not_load_the_tokenizer_and_changed_tokenizer_files_miss(tmp_path: Path,
                                                                                  tiny_model: Path) -> None:
    import shutil

    from transformers import AutoTokenizer

    from ftc.core.data.cache import Deferred

    shutil.copytree(tiny_model, tmp_path / "tok")
    path = write(tmp_path / "d.jsonl", ROWS)
    loads: list[int] = []

    def load() -> Any:
        loads.append(1)
        return AutoTokenizer.from_pretrained(tmp_path / "tok")

    first = prepare(path, AutoTokenizer.from_pretrained(tmp_path / "tok"), tmp_path)  # as train.py: loaded
    again = prepare(path, Deferred(tmp_path / "tok", load), tmp_path)  # as `ftc data`: loaded only if needed
    assert first.cached is None and again.cached is not None and not loads
    assert again.dataset("train").to_dict() == first.dataset("train").to_dict()
    template = next((tmp_path / "tok").glob("chat_template.jinja"), None)
    if template is not None:
        template.write_text(template.read_text() + "{{ '' }}")
    else:
        config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
        config["chat_template"] += "{{ '' }}"
        (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config))
    changed = prepare(path, Deferred(tmp_path / "tok", load), tmp_path)  # another template: loaded, and a miss
    assert loads == [1] and changed.cached is None


def test_a_files_row_count_is_counted_once_per_version_of_the_file(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ftc.compiler import facts

    path = write(tmp_path / "d.jsonl", ROWS * 2)
    counts: list[int] = []
    count = facts._count_rows
    monkeypatch.setattr(facts, "_count_rows", lambda *a: counts.append(1) or count(*a))
    assert facts.data_facts(str(path)).rows == facts.data_facts(str(path)).rows == 2 * len(ROWS)
    assert counts == [1]
    write(path, ROWS * 3)
    assert facts.data_facts(str(path)).rows == 3 * len(ROWS) and counts == [1, 1]


@pytest.mark.parametrize("case", ["share", "mix", "source", "near", "procs"])
def test_streaming_into_the_cache_gives_what_the_stage_gives_in_memory(tmp_path: Path, tiny_tokenizer: Any,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      case: str) -> None:
    from ftc.core.data import flow

    monkeypatch.setattr(flow, "BLOCK", 7)  # many blocks, chunks across them
    monkeypatch.setattr(parallel, "CHUNK", 5)
    rows = ROWS + ROWS[:5] + [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}]},
                              {"conversations": [{"from": "human", "value": "long " * 30}, {"from": "gpt", "value": "A"}]}]
    path = write(tmp_path / "d.jsonl", rows)
    extra = write(tmp_path / "e.jsonl", ROWS[10:30] + [{"conversations": [{"from": "gpt", "value": "RED."}]}])
    held = write(tmp_path / "v.jsonl", ROWS[:3] + [{"conversations": [{"from": "human", "value": "v"},
                                                                      {"from": "gpt", "value": "V"}]}])
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {"validation": 0.2}
    memory: dict[str, Any] = {}
    if case == "mix":
        options["mix"] = [{"source": str(extra), "kind": "json", "weight": 1.5}]
        memory["mix"] = [(str(extra), load_rows(str(extra), "json"), 1.5)]
    if case == "source":
        overrides["validation"] = str(held)
        options["validation_loader"] = "json"
        memory |= {"validation_rows": load_rows(str(held), "json"), "validation_source": str(held)}
    if case == "near":
        overrides["near_dedup"] = 0.8
    if case == "procs":
        monkeypatch.setattr(parallel, "PARALLEL_MIN", 10)
        monkeypatch.setenv("FTC_DATA_PROCS", "2")
    settings = data_settings("chat", 21, columns={"messages": "conversations"}, untrained="drop", **overrides)
    streamed = prepare_sources(tiny_tokenizer, settings, source=str(path), kind="json", micro_batch_size=2, **options)
    listed = prepare_data(load_rows(str(path), "json"), tiny_tokenizer, settings, source=str(path), micro_batch_size=2,
                          **memory)
    from ftc.core.data.cache import Stored

    assert streamed.cached is None and isinstance(streamed.train, Stored)  # memory-mapped, not lists
    assert json.loads(json.dumps(listed.stats)) == streamed.stats
    assert json.loads(json.dumps(listed.dropped, default=str)) == streamed.dropped
    for split in ("train", "validation"):
        assert streamed.dataset(split).to_dict() == listed.dataset(split).to_dict()
    assert [e.example for e in streamed.validation] == [e.example for e in listed.validation]
    assert {e.split for e in streamed.validation} == {"validation"}


def test_examples_are_dumped_by_orjson_and_by_json_where_orjson_refuses() -> None:
    """The dedup key and the cache's example column (clean.example_json): orjson's JSON, read back as the same
    example; a lone surrogate or an integer past 64 bits, which orjson refuses, takes json's; the key ignores
    key order."""
    import json

    from ftc.core.data.clean import example_json, key

    plain = {"messages": [{"role": "user", "content": "héllo \"x\"\n"}, {"role": "assistant", "content": "数据"}]}
    odd = {"messages": [{"role": "user", "content": "a\ud800"}, {"role": "assistant", "content": "b"}], "n": 2 ** 70}
    for example in (plain, odd):
        assert json.loads(example_json(example)) == example
        assert key(example) == key(dict(reversed(list(example.items())))) and len(key(example)) == 16
    assert example_json(plain) == json.dumps(plain, ensure_ascii=False, separators=(",", ":")).encode()
    assert key(plain) != key(odd)
