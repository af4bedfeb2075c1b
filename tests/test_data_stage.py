"""The data stage (core/data/), token for token: every format and convention the user's data
comes in, the three masking rules, cleaning with its dropped-rows file, and the errors on bad rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import data_settings

from ftc.core.data.clean import near_duplicates
from ftc.core.data.encode import IGNORE, DataError
from ftc.core.data.stage import prepare_data
from ftc.core.data.stats import packed_rows, padding, percentile

SYSTEM_CHAT = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "one"},
    {"role": "assistant", "content": "two"},
    {"role": "user", "content": "three"},
    {"role": "assistant", "content": "four five"},
]


def expected_labels(tokenizer: Any, messages: list[dict[str, str]], train_on: str = "answers") -> list[int]:
    """The ChatML mask built piece by piece: which turns' header and body tokens are trained."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    labels: list[int] = []
    for i, m in enumerate(messages):
        head = tokenizer("<|im_start|>" + m["role"] + "\n", add_special_tokens=False)["input_ids"]
        body = tokenizer(m["content"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        if m["role"] == "system":
            labels += [IGNORE] * (len(head) + len(body))
        elif train_on == "inputs_too":
            labels += head + body
        elif m["role"] == "assistant" and (train_on == "answers" or i == last):
            labels += [IGNORE] * len(head) + body
        else:
            labels += [IGNORE] * (len(head) + len(body))
    return labels


def stage(tokenizer: Any, rows: list[dict[str, Any]], tmp_path: Path | None = None, **settings: Any) -> Any:
    return prepare_data(rows, tokenizer, data_settings(**settings), source="d.jsonl", report_dir=tmp_path)


@pytest.mark.parametrize("train_on", ["answers", "last_answer", "inputs_too"])
def test_chat_masks_follow_the_rule(tiny_tokenizer: Any, train_on: str) -> None:
    prepared = stage(tiny_tokenizer, [{"messages": SYSTEM_CHAT}], format="chat", columns={}, train_on=train_on)
    encoding = prepared.train[0].encoding
    assert encoding["labels"] == expected_labels(tiny_tokenizer, SYSTEM_CHAT, train_on)
    trained = tiny_tokenizer.decode([t for t in encoding["labels"] if t != IGNORE])
    assert "be brief" not in trained  # system prompts are never trained
    assert trained.endswith("four five<|im_end|>\n")  # end-of-turn (the EOS) is trained
    assert {"answers": "two<|im_end|>\nfour five<|im_end|>\n", "last_answer": "four five<|im_end|>\n",
            "inputs_too": tiny_tokenizer.decode(encoding["input_ids"]).split("be brief<|im_end|>\n")[1]}[
        train_on] == trained


def test_sharegpt_is_detected_and_its_roles_mapped(tiny_tokenizer: Any) -> None:
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    row = {"conversations": [{"from": names[m["role"]], "value": m["content"]} for m in SYSTEM_CHAT]}
    prepared = stage(tiny_tokenizer, [row], format="chat", columns={"messages": "conversations"})
    assert prepared.train[0].example["messages"] == SYSTEM_CHAT
    assert prepared.train[0].encoding["labels"] == expected_labels(tiny_tokenizer, SYSTEM_CHAT)


def test_roles_and_turn_keys_can_be_overridden(tiny_tokenizer: Any) -> None:
    row = {"dialog": [{"speaker": "customer", "says": "one"}, {"speaker": "agent", "says": "two"}]}
    prepared = stage(tiny_tokenizer, [row], format="chat",
                     columns={"messages": "dialog", "role": "speaker", "content": "says"},
                     roles={"customer": "user", "agent": "assistant"})
    messages = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]
    assert prepared.train[0].encoding["labels"] == expected_labels(tiny_tokenizer, messages)


def test_unmappable_roles_name_the_rows(tiny_tokenizer: Any) -> None:
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "narrator", "content": "a"}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "narrator", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    with pytest.raises(DataError, match=r"'narrator' \(rows 2, 3\).*\[data.roles\], e.g. \"narrator\" = \"user\""):
        stage(tiny_tokenizer, rows, format="chat", columns={})


def test_alpaca_with_input_and_system(tiny_tokenizer: Any) -> None:
    rows = [{"instruction": "reverse", "input": "cat", "output": "tac", "system": "be brief"},
            {"instruction": "upper", "input": "", "output": "DOG", "system": ""}]
    prepared = stage(tiny_tokenizer, rows, format="instruction", columns={})
    first = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "reverse\n\ncat"},
             {"role": "assistant", "content": "tac"}]
    second = [{"role": "user", "content": "upper"}, {"role": "assistant", "content": "DOG"}]
    assert [e.example["messages"] for e in prepared.train] == [first, second]
    assert [e.encoding["labels"] for e in prepared.train] == [expected_labels(tiny_tokenizer, first),
                                                              expected_labels(tiny_tokenizer, second)]


def test_prompt_completion_with_nested_columns(tiny_tokenizer: Any) -> None:
    rows = [{"meta": {"q": "translate red"}, "a": "RED"}]
    prepared = stage(tiny_tokenizer, rows, format="completion", columns={"prompt": "meta.q", "completion": "a"})
    messages = [{"role": "user", "content": "translate red"}, {"role": "assistant", "content": "RED"}]
    assert prepared.train[0].encoding["labels"] == expected_labels(tiny_tokenizer, messages)


def test_text_trains_every_token_and_eos(tiny_tokenizer: Any) -> None:
    prepared = stage(tiny_tokenizer, [{"body": "hello world"}], format="text", columns={"text": "body"})
    encoding = prepared.train[0].encoding
    assert encoding["labels"] == encoding["input_ids"]
    assert encoding["input_ids"][-1] == tiny_tokenizer.eos_token_id


@pytest.mark.parametrize("train_on", ["answers", "inputs_too"])
def test_prompt_template_masks_the_rendered_prompt(tiny_tokenizer: Any, train_on: str) -> None:
    template = "### Instruction:\n{{ instruction }}{% if input %}\n{{ input }}{% endif %}\n### Response:\n"
    rows = [{"instruction": "reverse", "input": "cat", "output": "tac"}]
    prepared = stage(tiny_tokenizer, rows, format="instruction", columns={}, template=template, train_on=train_on)
    prompt = tiny_tokenizer("### Instruction:\nreverse\ncat\n### Response:\n")["input_ids"]
    answer = tiny_tokenizer("tac", add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
    encoding = prepared.train[0].encoding
    assert encoding["input_ids"] == prompt + answer
    assert encoding["labels"] == (prompt if train_on == "inputs_too" else [IGNORE] * len(prompt)) + answer


def test_cleaning_drops_planted_rows_and_writes_them(tiny_tokenizer: Any, tmp_path: Path) -> None:
    good = [{"prompt": f"translate {w}", "completion": w.upper()}
            for w in ["red", "green", "blue", "yellow", "black", "white"]]
    planted = [
        dict(good[0]),                                                         # 7: exact duplicate of row 1
        {"prompt": "translate  Green", "completion": "GREEN"},                 # 8: near duplicate of row 2
        {"prompt": "translate cat", "completion": ""},                         # 9: empty answer
        {"prompt": ["not", "text"], "completion": "X"},                        # 10: malformed
        {"prompt": "one two three four five six seven eight", "completion": "nine ten " * 20},  # 11: too long
    ]
    prepared = stage(tiny_tokenizer, good + planted, tmp_path, format="completion", columns={},
                     near_dedup=0.8, max_tokens=40)
    assert sorted(e.row for e in prepared.train) == [1, 2, 3, 4, 5, 6]
    stats = prepared.stats
    assert {k: v for k, v in stats["dropped"].items() if v} == {
        "duplicate": 1, "near_duplicate": 1, "empty": 1, "malformed": 1, "too_long": 1}
    assert stats["duplicates_removed"] == 2 and stats["rows_read"] == 11
    written = [json.loads(line) for line in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert {(d["row"], d["reason"]) for d in written} == {
        (7, "duplicate"), (8, "near_duplicate"), (9, "empty"), (10, "malformed"), (11, "too_long")}
    assert next(d for d in written if d["row"] == 7)["detail"] == "the same example as row 1"
    assert next(d for d in written if d["row"] == 10)["data"] == planted[3]
    assert json.loads((tmp_path / "stats.json").read_text()) == stats


def test_exact_dedup_is_on_by_default_and_can_be_turned_off(tiny_tokenizer: Any) -> None:
    rows = [{"text": "same words"}] * 3
    assert len(stage(tiny_tokenizer, rows, format="text", columns={}).train) == 1
    assert len(stage(tiny_tokenizer, rows, format="text", columns={}, dedup=False).train) == 3


def test_untrained_examples_stop_with_their_rows_unless_dropped(tiny_tokenizer: Any) -> None:
    rows = [{"prompt": "short", "completion": "ok"},
            {"prompt": "one two three four five six seven eight nine ten " * 3, "completion": "lost"}]
    with pytest.raises(DataError, match=r"1 example\(s\) with no trained token \(rows 2\)"):
        stage(tiny_tokenizer, rows, format="completion", columns={}, max_length=20)
    prepared = stage(tiny_tokenizer, rows, format="completion", columns={}, max_length=20, untrained="drop")
    assert [e.row for e in prepared.train] == [1] and prepared.stats["untrained_rows"] == [2]


def test_nothing_left_is_an_error_with_the_first_problem(tiny_tokenizer: Any) -> None:
    with pytest.raises(DataError, match=r"no example is left.*2 malformed.*row 1: no field 'prompt'"):
        stage(tiny_tokenizer, [{"q": "a", "a": "b"}, {"q": "c"}], format="completion", columns={})


def test_validation_split_is_seeded_and_statistics_add_up(tiny_tokenizer: Any) -> None:
    rows = [{"text": f"example number {i} " + "word " * (i % 7)} for i in range(40)]
    a = stage(tiny_tokenizer, rows, format="text", columns={}, validation=0.2, seed=3)
    b = stage(tiny_tokenizer, rows, format="text", columns={}, validation=0.2, seed=3)
    assert [e.row for e in a.validation] == [e.row for e in b.validation] and len(a.validation) == 8
    assert not {e.row for e in a.train} & {e.row for e in a.validation}
    train = a.stats["splits"]["train"]
    assert train["examples"] == 32 and train["tokens"] == sum(len(e.encoding["input_ids"]) for e in a.train)
    assert train["trained_tokens"] == train["tokens"] and train["trained_share"] == 1.0
    lengths = sorted(e.encoding["length"] for e in a.train)
    assert train["length"]["max"] == lengths[-1] and train["length"]["p50"] == lengths[15]


def test_second_validation_source_drops_rows_seen_in_training(tiny_tokenizer: Any) -> None:
    train = [{"text": "alpha beta"}, {"text": "gamma delta"}]
    held = [{"text": "gamma delta"}, {"text": "epsilon"}]
    prepared = prepare_data(train, tiny_tokenizer, data_settings("text", 64, validation="v.jsonl"),
                            validation_rows=held, validation_source="v.jsonl")
    assert [e.row for e in prepared.validation] == [2]
    assert prepared.dropped[0]["reason"] == "in_training_data" and prepared.dropped[0]["source"] == "v.jsonl"


def test_near_duplicates_use_the_threshold_exactly() -> None:
    texts = ["the quick brown fox jumps over the lazy dog", "the quick brown fox jumped over the lazy dog",
             "completely different words in this one", "the quick brown fox jumps over the lazy dog!"]
    assert set(near_duplicates(texts, 0.7)) == {1, 3}  # similarities to text 0: 0.76 and 0.98
    assert set(near_duplicates(texts, 0.8)) == {3}
    assert near_duplicates(texts, 0.8)[3] == (0, pytest.approx(0.975))


def test_padding_and_packing_arithmetic() -> None:
    assert padding([3, 5], 2, seed=0) == 2 and padding([3, 5], 1, seed=0) == 0
    assert packed_rows([6, 5, 4, 3, 2], 10) == 2  # 6+4, 5+3+2
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 90) == 0


def test_mixed_sources_are_weighted_after_cleaning_and_split(tiny_tokenizer: Any) -> None:
    main = [{"text": f"main example {i}"} for i in range(10)]
    extra = [{"text": f"extra example {i}"} for i in range(4)] + [{"text": "main example 0"}]  # one repeat of main
    prepared = prepare_data(main, tiny_tokenizer, data_settings("text", 64, validation=0.2),
                            source="main.jsonl", mix=[("extra.jsonl", extra, 2.5)])
    assert prepared.dropped[0]["source"] == "extra.jsonl" and prepared.dropped[0]["detail"] == (
        "the same example as main.jsonl row 1")
    sources = prepared.stats["sources"]
    extra_train = sources["extra.jsonl"]["train_examples"]
    assert sources["main.jsonl"]["weighted_examples"] == sources["main.jsonl"]["train_examples"]
    assert sources["extra.jsonl"]["weighted_examples"] == 2 * extra_train + round(0.5 * extra_train)
    assert len(prepared.dataset("train")) == prepared.stats["splits"]["train"]["examples"] == len(
        prepared.weighted_train)
    assert not {e.example["text"] for e in prepared.validation} & {e.example["text"] for e in prepared.weighted_train}


def test_text_files_are_one_row_per_line(tmp_path: Path) -> None:
    from ftc.compiler.facts import data_facts
    from ftc.core.data.load import load_rows

    (tmp_path / "a.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    facts = data_facts(str(tmp_path / "a.txt"))
    assert (facts.loader, facts.columns, facts.rows) == ("text", ("text",), 2)
    assert load_rows(str(tmp_path / "a.txt"), "text") == [{"text": "first line"}, {"text": "second line"}]


def test_unreadable_rows_are_reported_with_the_file(tmp_path: Path) -> None:
    from ftc.core.data.load import load_rows

    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_rows(str(tmp_path / "bad.jsonl"), "json")


class _Events:
    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []

    def write(self, kind: str, message: str, **fields: Any) -> None:
        self.written.append((kind, message))


def test_saved_tokenizer_is_checked_against_training(tiny_tokenizer: Any, tmp_path: Path) -> None:
    from ftc.core.data.stage import check_saved_tokenizer

    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "world"}]}]
    settings = data_settings("chat", 64)
    prepared = prepare_data(rows, tiny_tokenizer, settings)
    tiny_tokenizer.save_pretrained(tmp_path / "same")
    events = _Events()
    assert check_saved_tokenizer(tmp_path / "same", prepared, settings, events) and not events.written
    template = tiny_tokenizer.chat_template
    try:  # a run that trained with another template than the one saved: the check says so
        tiny_tokenizer.chat_template = template.replace("message['role']", "message['role'] + ':'")
        assert tiny_tokenizer.chat_template != template
        tiny_tokenizer.save_pretrained(tmp_path / "other")
    finally:
        tiny_tokenizer.chat_template = template
    assert not check_saved_tokenizer(tmp_path / "other", prepared, settings, events)
    assert events.written[0][0] == "warning" and "encodes training row 1 differently" in events.written[0][1]


def test_saved_dataset_directories_load_with_their_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from ftc.core.data.load import load_rows

    rows = [{"text": "a"}, {"text": "b"}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])}).save_to_disk(
        str(tmp_path / "dict"))
    assert load_rows(str(tmp_path / "one"), "saved") == rows
    assert load_rows(str(tmp_path / "dict"), "saved", split="test") == rows[:1]
    with pytest.raises(DataError, match=r"no split 'dev' \(splits: train, test\); set data.split"):
        load_rows(str(tmp_path / "dict"), "saved", split="dev")
