"""Tokenize examples and build their labels: what is trained and what is masked.

Chat-shaped examples (chat, instruction and completion formats) are rendered with the
tokenizer's chat template. Each assistant turn's characters are found by rendering the
conversation up to that turn twice (with the generation prompt, and with the answer), and the
tokens whose characters fall inside those spans are trained; every other token (system, user,
template markup, earlier prompts) gets the label -100. This works for any template that renders
conversations incrementally, multi-turn included; a template that does not is reported.
Which turns are trained is switchable (`TRAIN_ON`); system prompts never are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ftc.core.data.settings import DataSettings
from ftc.core.sandbox import TemplateLimit
from ftc.core.errors import DataProblem

if TYPE_CHECKING:  # load.py imports DataError from here
    from ftc.core.data.load import Item, Source

IGNORE = -100  # label of tokens left out of the loss (PyTorch cross_entropy's ignore_index)

# ChatML, used when a tokenizer has no chat template (then saved with the trained model).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class DataError(DataProblem, ValueError):
    """Rows cannot be read or an example cannot be encoded; the message names the file, the row and
    what to fix (exit code 2, no traceback: ftc.core.errors.DataProblem)."""


def chatml_missing_tokens(tokenizer: Any) -> list[str]:
    """ChatML's markers that are not single tokens of the tokenizer's vocabulary."""
    return [marker for marker in ("<|im_start|>", "<|im_end|>")
            if len(tokenizer(marker, add_special_tokens=False)["input_ids"]) != 1]


def ensure_chat_template(tokenizer: Any) -> str | None:
    """Give a tokenizer without a chat template ChatML; returns a warning text when it did. Refuses
    (DataError) when ChatML's markers are not tokens of the vocabulary: they would be trained as
    plain text and the model would never learn to stop at its end-of-sequence token."""
    if getattr(tokenizer, "chat_template", None):
        return None
    missing = chatml_missing_tokens(tokenizer)
    if missing:
        raise DataError(f"the tokenizer has no chat template, and the ChatML markers ftc would add "
                        f"({', '.join(missing)}) are not tokens of its vocabulary; set data.template to a plain-text "
                        "prompt template (the answer then ends with the tokenizer's EOS), use format = \"text\", "
                        "or fine-tune a model that has a chat template")
    tokenizer.chat_template = CHATML_TEMPLATE
    return "the tokenizer has no chat template; using ChatML (saved with the model)"


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


TRAIN_ON = ("answers", "last_answer", "inputs_too")
"""What a chat-shaped example trains: every assistant turn (default), only the last one, or every
turn after the system prompt (user turns and markup too). System prompts are never trained."""

Render = tuple[int, bool]  # a prefix to render: (its number of messages, with the generation prompt)


def _check(messages: Sequence[dict[str, str]], train_on: str) -> None:
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("a conversation must end with an assistant turn")
    if train_on not in TRAIN_ON:
        raise DataError(f"train_on must be one of {', '.join(TRAIN_ON)} (got {train_on!r})")


def _trained_turns(messages: Sequence[dict[str, str]], train_on: str) -> list[tuple[int, Render, Render]]:
    """Each trained turn with the two prefixes that bound it: it starts where the first one ends (the
    conversation before it, with the generation prompt for an answer) and ends where the second does."""
    last_answer = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    turns = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "system" or (role != "assistant" and train_on != "inputs_too"):
            continue
        if train_on == "last_answer" and i != last_answer:
            continue
        # an answer starts after its header (the generation prompt); an input turn with its header
        turns.append((i, (i, role == "assistant" and train_on != "inputs_too"), (i + 1, False)))
    return turns


def _renders(messages: Sequence[dict[str, str]], train_on: str) -> list[Render]:
    """The prefixes `_spans` needs, the whole conversation first (each rendered once)."""
    needed = [(len(messages), False)]
    for _, start, end in _trained_turns(messages, train_on):
        needed += [r for r in (start, end) if r[0] and r not in needed]
    return needed


def _spans(messages: Sequence[dict[str, str]], rendered: dict[Render, str], train_on: str) -> list[tuple[int, int]]:
    """Character spans of the whole rendered conversation whose tokens are trained."""
    text = rendered[(len(messages), False)]
    spans: list[tuple[int, int]] = []
    for i, start, end in _trained_turns(messages, train_on):
        start_text = rendered[start] if start[0] else ""
        end_text = rendered[end]
        if not (text.startswith(start_text) and text.startswith(end_text) and len(end_text) > len(start_text)):
            raise DataError(f"the chat template does not render conversations incrementally (turn {i + 1} renders "
                            "differently inside the whole conversation), so the answer tokens cannot be located; use a "
                            "template that renders each turn the same way")
        if spans and spans[-1][1] == len(start_text):  # adjacent turns (inputs_too): one span
            spans[-1] = (spans[-1][0], len(end_text))
        else:
            spans.append((len(start_text), len(end_text)))
    return spans


def _labels(input_ids: list[int], offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """The token's id where its first character is inside a span (and it has characters), else IGNORE."""
    import numpy as np

    ids = np.asarray(input_ids, dtype=np.int64)
    where = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    begin, end = where[:, 0], where[:, 1]
    if not spans:
        return [IGNORE] * len(input_ids)
    if overlapping(spans) or (len(begin) > 1 and bool((np.diff(begin) < 0).any())):  # unordered: token by token
        return _labels_in_order(input_ids, offsets, spans)
    return np.where(inside_spans(begin, spans) & (end > begin), ids, IGNORE).tolist()


def overlapping(spans: Sequence[tuple[int, int]]) -> bool:
    """Whether spans overlap or go backwards (then the sorted search of `inside_spans` does not apply)."""
    return any(a[1] > b[0] for a, b in zip(spans, spans[1:]))


def inside_spans(positions: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """For each position (a numpy array), whether it is inside one of the ordered, disjoint spans."""
    import numpy as np

    if not spans:
        return np.zeros(len(positions), dtype=bool)
    starts, ends = np.asarray(spans, dtype=np.int64).T
    span = np.searchsorted(starts, positions, side="right") - 1  # the last span starting at or before it
    return (span >= 0) & (positions < ends[np.maximum(span, 0)])


def _labels_in_order(input_ids: list[int], offsets: Sequence[tuple[int, int]],
                     spans: list[tuple[int, int]]) -> list[int]:
    labels: list[int] = []
    span = 0
    for token, (begin, end) in zip(input_ids, offsets):
        while span < len(spans) and begin >= spans[span][1]:
            span += 1
        trained = span < len(spans) and spans[span][0] <= begin < spans[span][1] and end > begin
        labels.append(token if trained else IGNORE)
    return labels


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int,
                train_on: str = "answers") -> dict[str, Any]:
    """input_ids and labels for a conversation. `train_on` picks the trained turns (see TRAIN_ON);
    an assistant turn is trained with its end-of-turn token, never with its header."""
    _check(messages, train_on)
    rendered = {r: _render(tokenizer, messages[:r[0]], r[1]) for r in _renders(messages, train_on)}
    spans = _spans(messages, rendered, train_on)
    encoding = tokenizer(rendered[(len(messages), False)], add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    return _truncate(input_ids, _labels(input_ids, encoding["offset_mapping"], spans), max_length)


def encode_prompt(tokenizer: Any, prompt: str, answer: str, max_length: int,
                  train_on: str = "answers") -> dict[str, Any]:
    """input_ids and labels for a plain-text prompt (from data.template) and its answer followed by EOS.
    The prompt is masked unless `train_on` is "inputs_too"."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    return _prompt(tokenizer, prompt_ids, tokenizer(answer, add_special_tokens=False)["input_ids"], max_length,
                   train_on)


def _prompt(tokenizer: Any, prompt_ids: list[int], answer_ids: list[int], max_length: int,
            train_on: str) -> dict[str, Any]:
    prompt_ids, answer_ids = list(prompt_ids), list(answer_ids)
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    prompt_labels = list(prompt_ids) if train_on == "inputs_too" else [IGNORE] * len(prompt_ids)
    return _truncate(prompt_ids + answer_ids, prompt_labels + answer_ids, max_length)


def encode_text(tokenizer: Any, text: str, max_length: int) -> dict[str, Any]:
    """input_ids and labels for raw text: every token trained, ending with EOS."""
    return _text(tokenizer, tokenizer(text, add_special_tokens=True)["input_ids"], max_length)


def _text(tokenizer: Any, ids: list[int], max_length: int) -> dict[str, Any]:
    ids = list(ids)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return _truncate(ids, list(ids), max_length)


def _truncate(input_ids: list[int], labels: list[int], max_length: int) -> dict[str, Any]:
    length = len(input_ids)
    kept = labels[:max_length]
    return {
        "input_ids": input_ids[:max_length],
        "labels": kept,
        "length": length,
        "truncated": length > max_length,
        "trained_tokens": len(kept) - kept.count(IGNORE),
    }


@dataclass
class Encoded:
    """One kept example: its source, row number there (1-based), split, example and encoding."""

    row: int
    example: dict[str, Any]
    encoding: dict[str, Any]
    split: str = "train"
    source: str = ""


def encode_example(tokenizer: Any, example: dict[str, Any], settings: DataSettings) -> dict[str, Any]:
    """input_ids, labels and counts of one example (see the module docstring for the masking)."""
    if "messages" in example:
        return encode_chat(tokenizer, example["messages"], settings.max_length, settings.train_on)
    if "prompt" in example:
        return encode_prompt(tokenizer, example["prompt"], example["answer"], settings.max_length, settings.train_on)
    return encode_text(tokenizer, example["text"], settings.max_length)


def encode_all(tokenizer: Any, items: list[Item], settings: DataSettings, sources: list[Source]) -> list[Encoded]:
    """Every example encoded, a chunk at a time (ftc.core.data.batch; with several processes for many:
    ftc.core.data.parallel); one that cannot be (see `_spans`) stops the stage, naming its row."""
    from ftc.core.data.batch import encode_many
    from ftc.core.data.parallel import map_chunks

    encodings = map_chunks(lambda chunk: encode_many(tokenizer, [item[2] for item in chunk], settings), items)
    return encoded_items(items, encodings, sources)


def encoded_items(items: Sequence[Item], encodings: Sequence[Any], sources: list[Source]) -> list[Encoded]:
    """The items with their encodings (ftc.core.data.batch.encode_many's); an exception in an item's place
    stops the stage, naming its row."""
    encoded: list[Encoded] = []
    for (index, number, example), encoding in zip(items, encodings):
        source = sources[index]
        if isinstance(encoding, DataError):
            raise DataError(f"{source.label(number)}: {encoding}") from None
        if isinstance(encoding, TemplateLimit):
            raise DataError(f"{source.label(number)}: the model's chat template: {encoding}") from None
        if isinstance(encoding, Exception):
            raise encoding
        encoded.append(Encoded(number, example, encoding, source=source.name))
    return encoded
