"""The batched encoder (ftc.core.data.batch, with its skeleton path: ftc.core.data.skeleton) and the per-example
one give IDENTICAL input_ids and labels to the encoder they replaced, kept here as the reference
(`reference_chat`: a render per prefix, a token loop), on every format, template and train_on case: ChatML, templates with a default system prompt, with
`{% generation %}` and that strip content, the bundled SmolLM2 template when it is converted here."""

from __future__ import annotations

import copy
import random
from collections.abc import Sequence
from typing import Any

import pytest
from helpers import data_settings

from ftc.core.data.batch import encode_many
from ftc.core.data.encode import IGNORE, TRAIN_ON, DataError, _truncate, encode_example, encode_prompt, encode_text

# Templates a tokenizer may bring: a default system prompt (SmolLM2's shape), {% generation %} markers, stripped
# content and a header for each role (Llama 3's shape).
TEMPLATES = {
    "default_system": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                      "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + "
                      "message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "generation": "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'A: ' }}{% generation %}"
                  "{{ m['content'] + eos_token }}{% endgeneration %}{% else %}{{ m['role'][0] | upper + ': ' + "
                  "m['content'] + '\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'A: ' }}{% endif %}",
    "headers_strip": "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '<|im_end|>\n\n' + "
                     "m['content'] | trim + '<|im_end|>' }}{% endfor %}{% if add_generation_prompt %}"
                     "{{ '<|im_start|>assistant<|im_end|>\n\n' }}{% endif %}",
}


def reference_chat(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int,
                   train_on: str = "answers") -> dict[str, Any]:
    """The encoder before batching, verbatim in what it computes: each trained turn located by rendering the
    conversation up to it twice, labels by walking the tokens' offsets."""
    def render(prefix: Sequence[dict[str, str]], generation: bool) -> str:
        return tokenizer.apply_chat_template(list(prefix), tokenize=False, add_generation_prompt=generation)

    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("a conversation must end with an assistant turn")
    text = render(messages, False)
    spans: list[tuple[int, int]] = []
    last_answer = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "system" or (role != "assistant" and train_on != "inputs_too") or \
                (train_on == "last_answer" and i != last_answer):
            continue
        start = render(messages[:i], role == "assistant" and train_on != "inputs_too") if i else ""
        end = text if i == len(messages) - 1 else render(messages[: i + 1], False)
        if not (text.startswith(start) and text.startswith(end) and len(end) > len(start)):
            raise DataError("the chat template does not render conversations incrementally")
        if spans and spans[-1][1] == len(start):
            spans[-1] = (spans[-1][0], len(end))
        else:
            spans.append((len(start), len(end)))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    labels, span = [], 0
    for token, (begin, end_) in zip(encoding["input_ids"], encoding["offset_mapping"]):
        while span < len(spans) and begin >= spans[span][1]:
            span += 1
        trained = span < len(spans) and spans[span][0] <= begin < spans[span][1] and end_ > begin
        labels.append(token if trained else IGNORE)
    return _truncate(list(encoding["input_ids"]), labels, max_length)


def conversations(seed: int = 0, count: int = 40) -> list[list[dict[str, str]]]:
    """Single and multi-turn conversations, with and without a system prompt, with empty, padded, multi-line
    and non-ASCII contents (each case the stage meets)."""
    rng = random.Random(seed)
    words = ["red", "  blue ", "ünïcödé", "数据", "🙂 ok", "", "line\nbreak", "<|im_end|> not a marker", "tab\t."]
    out = []
    for n in range(count):
        chat = [{"role": "system", "content": rng.choice(words) + " be brief"}] if n % 3 == 0 else []
        for _ in range(1 + n % 3):
            chat += [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(1, 6)))},
                     {"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(0, 8)))}]
        out.append(chat)
    return out


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer: Any) -> dict[str, Any]:
    found = {"chatml": tiny_tokenizer}
    for name, template in TEMPLATES.items():
        found[name] = copy.deepcopy(tiny_tokenizer)
        found[name].chat_template = template
    from ftc.core.bundled import MARKER, cache_root

    bundled = cache_root() / "models" / "smollm2-135m-instruct"
    if (bundled / MARKER).is_file():
        from transformers import AutoTokenizer

        found["smollm2"] = AutoTokenizer.from_pretrained(bundled)
    return found


@pytest.mark.parametrize("train_on", TRAIN_ON)
@pytest.mark.parametrize("max_length", [512, 40])
def test_chat_encodings_are_identical_to_the_reference(tokenizers: dict[str, Any], train_on: str,
                                                       max_length: int) -> None:
    chats = conversations()
    settings = data_settings("chat", max_length, train_on=train_on)
    for name, tokenizer in tokenizers.items():
        expected = [reference_chat(tokenizer, chat, max_length, train_on) for chat in chats]
        assert sum(e["trained_tokens"] for e in expected) > 0
        examples = [{"messages": chat} for chat in chats]
        assert [encode_example(tokenizer, e, settings) for e in examples] == expected, name
        assert encode_many(tokenizer, examples, settings) == expected, name
        as_arrays = encode_many(tokenizer, examples, settings, arrays=True)  # the cache writer's form
        assert [e | {"input_ids": list(e["input_ids"]), "labels": list(e["labels"])} for e in as_arrays] == expected


@pytest.mark.parametrize("train_on", ["answers", "inputs_too"])
def test_prompt_and_text_encodings_are_identical_one_by_one_and_batched(tiny_tokenizer: Any, train_on: str) -> None:
    words = [w for chat in conversations(1, 10) for m in chat for w in [m["content"]]]
    prompts = [{"prompt": f"Q: {w}\nA:", "answer": w[::-1]} for w in words]
    texts = [{"text": w} for w in words]
    settings = data_settings("completion", 12, train_on=train_on)
    assert encode_many(tiny_tokenizer, prompts, settings) == [
        encode_prompt(tiny_tokenizer, e["prompt"], e["answer"], 12, train_on) for e in prompts]
    assert encode_many(tiny_tokenizer, texts, settings) == [encode_text(tiny_tokenizer, e["text"], 12) for e in texts]
    mixed = [prompts[0], texts[1], {"messages": conversations()[1]}, texts[2]]
    assert encode_many(tiny_tokenizer, mixed, settings) == [encode_example(tiny_tokenizer, e, settings) for e in mixed]


def test_a_bad_example_in_a_chunk_stops_there_with_its_error(tiny_tokenizer: Any) -> None:
    settings = data_settings("chat", 64)
    chats = [{"messages": chat} for chat in conversations(count=5)]
    bad = {"messages": [{"role": "user", "content": "no answer"}]}
    out = encode_many(tiny_tokenizer, chats[:2] + [bad] + chats[2:], settings)
    assert len(out) == 3 and isinstance(out[2], DataError) and "must end with an assistant turn" in str(out[2])
    assert out[:2] == [encode_example(tiny_tokenizer, e, settings) for e in chats[:2]]


def test_a_template_that_fails_on_one_row_is_named_there(tiny_tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{% if m['content'] == 'boom' %}{{ raise_exception('no boom') }}"
                               "{% endif %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    settings = data_settings("chat", 64)
    chats = [{"messages": chat} for chat in conversations(count=4)]
    bad = {"messages": [{"role": "user", "content": "boom"}, {"role": "assistant", "content": "x"}]}
    out = encode_many(tokenizer, chats[:3] + [bad] + chats[3:], settings)
    assert len(out) == 4 and "no boom" in str(out[3])
    assert out[:3] == [reference_chat(tokenizer, e["messages"], 64) for e in chats[:3]]


def test_the_direct_paths_are_taken_and_give_way_where_transformers_would_differ(tiny_tokenizer: Any) -> None:
    from ftc.core.data import batch

    tokenizer = copy.deepcopy(tiny_tokenizer)
    calls: list[int] = []
    own = tokenizer.apply_chat_template
    tokenizer.apply_chat_template = lambda *a, **k: calls.append(1) or own(*a, **k)  # type: ignore[method-assign]
    chats = conversations(count=8)
    settings = data_settings("chat", 512)
    expected = [reference_chat(tiny_tokenizer, chat, 512) for chat in chats]
    assert encode_many(tokenizer, [{"messages": c} for c in chats], settings) == expected and not calls
    reasoning = [chats[0][:-1] + [chats[0][-1] | {"thinking": "hm"}]]  # transformers copies it as reasoning_content
    assert batch._render_all(tokenizer, reasoning, False) == own(reasoning, tokenize=False) and calls == [1]
    tokenizer.backend_tokenizer.enable_truncation(8)  # left set on the backend: the tokenizer's own call resets it
    assert batch._encode(tokenizer, ["a b c"], False) is None
    assert encode_many(tokenizer, [{"messages": c} for c in chats], settings) == expected


# Templates that use a content other than by copying it out: they must not take the skeleton path
# (ftc.core.data.skeleton), and still encode exactly as the reference.
NOT_OPAQUE = {
    "content_in_if": "{% for m in messages %}{% if m['content'] %}{{ m['role'] + ': ' + m['content'] + '\n' }}"
                     "{% else %}{{ m['role'] + ': (empty)\n' }}{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    "content_split": "{% for m in messages %}{{ m['role'] + ': ' + m['content'].split('\n')[0] + '|' + m['content'] + "
                     "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    "messages_tojson": "{{ (messages | tojson)[:20] + '\n' }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + "
                       "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    "set_content": "{% for m in messages %}{% set content = m['content'] | trim %}{{ m['role'] + ': ' + content + '\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    "upper_filter": "{% for m in messages %}{{ (m['role'] + ': ' + m['content']) | upper + '\n' }}{% endfor %}"
                    "{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}",
    "previous_item": "{% for m in messages %}{{ m['role'] + ': ' }}{% if loop.previtem is defined and "
                     "loop.previtem['content'] == '' %}{{ '(after an empty turn) ' }}{% endif %}{{ m['content'] + '\n' }}"
                     "{% endfor %}"
                 "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    "clock": "{{ 'Year ' + strftime_now('%Y') + '\n' }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + "
             "'\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
    # opaque in form, but its own text looks like a sentinel: the shapes are refused, the rows encoded exactly
    "sentinel_text": "{% for m in messages %}{{ '<\ue0000\ue001\ue0021\ue003>' + m['role'] + ': ' + m['content'] + '\n' }}"
                     "{% endfor %}{% if add_generation_prompt %}{{ '<\ue0000\ue001\ue0021\ue003>assistant: ' }}{% endif %}",
}
OPAQUE = ("chatml", "smollm2", "default_system", "generation", "headers_strip")


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of conversations each exact-path render call gets (batch._render_all)."""
    from ftc.core.data import batch

    calls: list[int] = []
    own = batch._render_all
    monkeypatch.setattr(batch, "_render_all", lambda t, conversations, g: calls.append(len(conversations)) or
                        own(t, conversations, g))
    return calls


def test_content_opaque_templates_take_the_skeleton_path(tokenizers: dict[str, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that fails if the optimisation silently stops applying: an opaque template renders no row the
    exact way (only rows with contents `| trim` would change, for the template that trims)."""
    from ftc.core.data import batch, skeleton

    calls = _counting(monkeypatch)
    chats = conversations()
    padded = sum(any(m["content"] != m["content"].strip() for m in chat) for chat in chats)
    assert 0 < padded < len(chats)
    for name in [n for n in OPAQUE if n in tokenizers]:
        tokenizer = tokenizers[name]
        assert skeleton.opacity(batch._template(tokenizer)[0].environment, tokenizer.chat_template) == \
            (name == "headers_strip"), name
        for train_on in TRAIN_ON:
            calls.clear()
            settings = data_settings("chat", 512, train_on=train_on)
            expected = [reference_chat(tokenizer, chat, 512, train_on) for chat in chats]
            assert encode_many(tokenizer, [{"messages": chat} for chat in chats], settings) == expected, name
            shapes = batch._skeletons(tokenizer, train_on).shapes
            assert shapes and all(shape is not None for shape in shapes.values()), name
            if name == "headers_strip":  # the rows with padded contents, each prefix they need (train_on)
                assert 0 < sum(calls) <= padded * 7, (name, calls)
            else:
                assert calls == [], (name, train_on)


@pytest.mark.parametrize("train_on", ["answers", "inputs_too"])
def test_templates_that_read_contents_take_the_exact_path_with_identical_results(
        tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch, train_on: str) -> None:
    from ftc.core.data import batch, skeleton

    calls = _counting(monkeypatch)
    chats = conversations(seed=3)
    settings = data_settings("chat", 512, train_on=train_on)
    for name, template in NOT_OPAQUE.items():
        tokenizer = copy.deepcopy(tiny_tokenizer)
        tokenizer.chat_template = template
        opaque = skeleton.opacity(batch._template(tokenizer)[0].environment, template) is not None
        assert opaque == (name == "sentinel_text"), name
        calls.clear()
        expected = [reference_chat(tokenizer, chat, 512, train_on) for chat in chats]
        assert encode_many(tokenizer, [{"messages": chat} for chat in chats], settings) == expected, name
        assert sum(calls) >= len(chats), name  # every row rendered the exact way


def test_a_template_that_is_opaque_but_not_incremental_is_refused_as_before(tiny_tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}{% if loop.last %}{{ 'last: ' }}{% endif %}"
                               "{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}")
    settings = data_settings("chat", 512)
    chats = [{"messages": chat} for chat in conversations(count=3)]
    with pytest.raises(DataError) as reference:
        encode_example(tokenizer, chats[0], settings)
    out = encode_many(tokenizer, chats, settings)
    assert len(out) == 1 and isinstance(out[0], DataError) and str(out[0]) == str(reference.value)


def test_an_empty_answer_that_renders_nothing_is_refused_as_before(tiny_tokenizer: Any) -> None:
    """The skeleton of an empty content has characters; the row's does not: its spans are checked per row."""
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    settings = data_settings("chat", 512)
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yes"}]}
    empty = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}
    with pytest.raises(DataError) as reference:
        encode_example(tokenizer, empty, settings)
    out = encode_many(tokenizer, [good, empty, good], settings)
    assert out[0] == encode_example(tokenizer, good, settings)
    assert len(out) == 2 and str(out[1]) == str(reference.value)


def test_chunk_labels_equal_the_per_row_rule_with_its_fallbacks() -> None:
    """batch._labels_many against encode._labels, rows whose offsets go backwards or whose spans overlap
    among ordered ones (they must not disturb their neighbours' search)."""
    from ftc.core.data.batch import _labels_many
    from ftc.core.data.encode import _labels

    rng = random.Random(5)
    rows = []
    for n in range(30):
        text = "x" * rng.randint(0, 40)
        offsets, at = [], 0
        while at < len(text):
            width = rng.choice([0, 1, 1, 2, 3])  # some empty tokens
            offsets.append((at, min(len(text), at + width)))
            at += width or (1 if rng.random() < 0.3 else 0)
        if n % 7 == 3 and len(offsets) > 2:
            offsets[1], offsets[2] = offsets[2], offsets[1]  # backwards
        cuts = sorted(rng.sample(range(len(text) + 1), min(4, len(text) + 1)))
        spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a]
        if n % 9 == 4 and len(text) > 4:
            spans = [(0, 4), (2, len(text))]  # overlapping
        rows.append(([rng.randint(0, 999) for _ in offsets], offsets, spans, text))
    ids, offsets, spans, texts = map(list, zip(*rows))
    assert _labels_many(ids, offsets, spans, texts) == [_labels(*row[:3]) for row in rows]
    assert any(label != IGNORE for row in _labels_many(ids, offsets, spans, texts) for label in row)


def _byte_level_variants(tiny_tokenizer: Any) -> dict[str, Any]:
    """The tiny tokenizer as it is, after a regex split (Llama 3 / Qwen's shape), with a ByteLevel post-processor
    that keeps offsets, and (not byte-level in `_byte_level`'s sense) one that trims them, one whose ByteLevel
    adds a prefix space and one whose split removes what it matches."""
    from tokenizers import pre_tokenizers, processors

    def variant(pre: Any = None, post: Any = None) -> Any:
        tokenizer = copy.deepcopy(tiny_tokenizer)
        if pre is not None:
            tokenizer._tokenizer.pre_tokenizer = pre
        if post is not None:
            tokenizer._tokenizer.post_processor = post
        return tokenizer

    def split(behavior: str, prefix: bool = False) -> Any:
        return pre_tokenizers.Sequence([pre_tokenizers.Split(r"\s+|\p{L}+|\p{N}{1,3}", behavior=behavior),
                                        pre_tokenizers.ByteLevel(add_prefix_space=prefix)])

    return {"plain": tiny_tokenizer, "split": variant(split("isolated")),
            "post_kept": variant(post=processors.ByteLevel(trim_offsets=False)),
            "post_trimmed": variant(post=processors.ByteLevel(trim_offsets=True)),
            "prefix_space": variant(split("isolated", prefix=True)), "split_removed": variant(split("removed"))}


def test_labels_from_byte_widths_equal_the_per_token_rule(tiny_tokenizer: Any) -> None:
    """batch._labels_by_bytes (byte-level tokenizers: each token's offsets from the byte widths of the tokens before
    it, none computed by the tokenizer) against encode._labels (every token's offsets), a chunk at a time, on texts
    with multi-byte characters split over several tokens, whitespace runs, special tokens and spans that start or
    end inside a token; tokenizers whose offsets the widths would not give are not byte-level; a row whose tokens'
    bytes are not its text's (an added token that strips the space before it) is left to its offsets."""
    from tokenizers import AddedToken

    from ftc.core.data.batch import _byte_level, _byte_widths, _labels_by_bytes
    from ftc.core.data.encode import _labels

    variants = _byte_level_variants(tiny_tokenizer)
    assert [_byte_level(t) for t in variants.values()] == [True, True, True, False, False, False]
    stripping = copy.deepcopy(tiny_tokenizer)
    stripping._tokenizer.add_special_tokens([AddedToken("<|strip|>", lstrip=True)])
    variants["stripping"] = stripping
    rng = random.Random(11)
    pieces = ["red", "  ", " blue", "ünï", "数据", "🙂", "\n\n", "<|im_end|>", "<|im_start|>assistant\n", "tab\t.", "x", ""]
    checked = misfits = 0
    for name, tokenizer in variants.items():
        widths = _byte_widths(tokenizer)
        if not _byte_level(tokenizer):
            assert widths is None
            continue
        for _ in range(30):
            texts, spans = [], []
            for _ in range(rng.randint(1, 12)):
                text = "".join(rng.choices(pieces + ["  <|strip|>"] * (name == "stripping"), k=rng.randint(0, 14)))
                cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 2 * rng.randint(1, 3))))
                texts.append(text)
                spans.append([(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if b > a])
            encodings = tokenizer._tokenizer.encode_batch(texts, add_special_tokens=False)
            fast = tokenizer._tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            assert [e.ids for e in fast] == [e.ids for e in encodings]
            _, found = _labels_by_bytes(widths, [e.ids for e in fast], spans, texts)
            for text, row, encoding, labels in zip(texts, spans, encodings, found):
                expected = _labels(encoding.ids, encoding.offsets, row)
                if labels is None:
                    misfits += 1
                    assert "<|strip|>" in text, (name, text, row)
                    continue
                assert labels == expected, (name, text, row)
                checked += sum(label != IGNORE for label in expected)
    assert misfits > 10
    assert checked > 1000
