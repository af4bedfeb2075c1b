"""Label masking, token for token: only answers (and their end-of-turn token) are trained."""

from __future__ import annotations

from typing import Any

import pytest

from ftc.core.data.encode import IGNORE, DataError, encode_chat, encode_text


def trained_text(tokenizer: Any, encoded: dict[str, Any]) -> str:
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label != IGNORE])


def masked_text(tokenizer: Any, encoded: dict[str, Any]) -> str:
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"]) if label == IGNORE])


def test_single_turn_trains_the_answer_only(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "translate red"}, {"role": "assistant", "content": "RED"}]
    encoded = encode_chat(tiny_tokenizer, messages, 512)
    assert trained_text(tiny_tokenizer, encoded) == "RED<|im_end|>\n"
    assert masked_text(tiny_tokenizer, encoded) == "<|im_start|>user\ntranslate red<|im_end|>\n<|im_start|>assistant\n"
    assert encoded["labels"] == [t if l != IGNORE else IGNORE for t, l in zip(encoded["input_ids"], encoded["labels"])]
    full = tiny_tokenizer.apply_chat_template(messages, tokenize=False)
    assert tiny_tokenizer.decode(encoded["input_ids"]) == full


def test_multi_turn_with_system_trains_every_assistant_turn(tiny_tokenizer: Any) -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
        {"role": "assistant", "content": "four five"},
    ]
    encoded = encode_chat(tiny_tokenizer, messages, 512)
    # token for token: the expected mask, built turn by turn from the template's pieces
    expected: list[int] = []
    for m in messages:
        head = tiny_tokenizer("<|im_start|>" + m["role"] + "\n", add_special_tokens=False)["input_ids"]
        body = tiny_tokenizer(m["content"] + "<|im_end|>\n", add_special_tokens=False)["input_ids"]
        expected += [IGNORE] * len(head) + (body if m["role"] == "assistant" else [IGNORE] * len(body))
    assert encoded["labels"] == expected
    assert trained_text(tiny_tokenizer, encoded) == "two<|im_end|>\nfour five<|im_end|>\n"
    assert "be brief" in masked_text(tiny_tokenizer, encoded)


def test_truncation_is_counted(tiny_tokenizer: Any) -> None:
    messages = [{"role": "user", "content": "one two three four five six"}, {"role": "assistant", "content": "seven"}]
    encoded = encode_chat(tiny_tokenizer, messages, 6)
    assert len(encoded["input_ids"]) == 6 and encoded["truncated"] and encoded["length"] > 6
    assert encoded["trained_tokens"] == 0  # the answer was cut away: finish_split refuses such rows


def test_text_trains_everything_and_ends_with_eos(tiny_tokenizer: Any) -> None:
    encoded = encode_text(tiny_tokenizer, "hello world", 64)
    assert encoded["labels"] == encoded["input_ids"]
    assert encoded["input_ids"][-1] == tiny_tokenizer.eos_token_id


def test_conversation_must_end_with_an_answer(tiny_tokenizer: Any) -> None:
    with pytest.raises(DataError, match="must end with an assistant turn"):
        encode_chat(tiny_tokenizer, [{"role": "user", "content": "hi"}], 64)


def test_non_incremental_template_is_reported(tiny_tokenizer: Any) -> None:
    class Shuffling:  # renders the last turn first: answers cannot be located
        eos_token_id = None

        def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool,
                                add_generation_prompt: bool) -> str:
            return "".join(m["content"] + ";" for m in reversed(messages)) + ("A:" if add_generation_prompt else "")

    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(DataError, match="does not render conversations incrementally"):
        encode_chat(Shuffling(), messages, 64)
