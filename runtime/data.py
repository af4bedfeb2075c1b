"""Tokenize examples and build their labels: what is trained and what is masked.

Chat-shaped examples (chat, instruction and completion formats) are rendered with the
tokenizer's chat template. Each assistant turn's characters are found by rendering the
conversation up to that turn twice (with the generation prompt, and with the answer), and the
tokens whose characters fall inside those spans are trained; every other token (system, user,
template markup, earlier prompts) gets the label -100. This works for any template that renders
conversations incrementally, multi-turn included; a template that does not is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE = -100  # label of tokens left out of the loss (PyTorch cross_entropy's ignore_index)

# ChatML, used when a tokenizer has no chat template (then saved with the trained model).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class DataError(ValueError):
    """An example cannot be encoded; the message names the row and what to fix."""


def ensure_chat_template(tokenizer: Any) -> str | None:
    """Give a tokenizer without a chat template ChatML; returns a warning text when it did."""
    if getattr(tokenizer, "chat_template", None):
        return None
    tokenizer.chat_template = CHATML_TEMPLATE
    return "the tokenizer has no chat template; using ChatML (saved with the model)"


def _render(tokenizer: Any, messages: Sequence[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], max_length: int) -> dict[str, Any]:
    """input_ids and labels for a conversation; loss on every assistant turn (content and end-of-turn)."""
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError("a conversation must end with an assistant turn")
    text = _render(tokenizer, messages, generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        start_text = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        end_text = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (text.startswith(start_text) and text.startswith(end_text) and len(end_text) > len(start_text)):
            raise DataError(
                "the chat template does not render conversations incrementally (turn "
                f"{i + 1} renders differently inside the whole conversation), so the answer tokens cannot "
                "be located; use a template that renders each turn the same way"
            )
        spans.append((len(start_text), len(end_text)))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = list(encoding["input_ids"])
    labels: list[int] = []
    span = 0
    for token, (begin, end) in zip(input_ids, encoding["offset_mapping"]):
        while span < len(spans) and begin >= spans[span][1]:
            span += 1
        trained = span < len(spans) and spans[span][0] <= begin < spans[span][1] and end > begin
        labels.append(token if trained else IGNORE)
    return _truncate(input_ids, labels, max_length)


def encode_text(tokenizer: Any, text: str, max_length: int) -> dict[str, Any]:
    """input_ids and labels for raw text: every token trained, ending with EOS."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return _truncate(ids, list(ids), max_length)


def _truncate(input_ids: list[int], labels: list[int], max_length: int) -> dict[str, Any]:
    length = len(input_ids)
    return {
        "input_ids": input_ids[:max_length],
        "labels": labels[:max_length],
        "length": length,
        "truncated": length > max_length,
        "trained_tokens": sum(1 for label in labels[:max_length] if label != IGNORE),
    }


def summarize(split: str, dataset: Any) -> dict[str, Any]:
    """Counts of an encoded split, for the log and the `data` event."""
    lengths = dataset["length"]
    trained = dataset["trained_tokens"]
    return {
        "split": split,
        "examples": len(lengths),
        "tokens": int(sum(len(ids) for ids in dataset["input_ids"])),
        "trained_tokens": int(sum(trained)),
        "truncated": int(sum(dataset["truncated"])),
        "max_length_seen": int(max(lengths, default=0)),
        "zero_trained_rows": [i for i, n in enumerate(trained) if n == 0][:20],
    }


def finish_split(dataset: Any, split: str, events: Any) -> Any:
    """Report an encoded split's counts; fail on examples with nothing to train; keep model columns."""
    stats = summarize(split, dataset)
    share = 100 * stats["trained_tokens"] / stats["tokens"] if stats["tokens"] else 0.0
    message = (f"{split}: {stats['examples']} examples, {stats['tokens']:,} tokens, "
               f"{stats['trained_tokens']:,} trained ({share:.0f} %), {stats['truncated']} truncated, "
               f"longest {stats['max_length_seen']} tokens")
    print(message, flush=True)
    events.write("data", message, **stats)
    if stats["zero_trained_rows"]:
        rows = ", ".join(str(i) for i in stats["zero_trained_rows"])
        raise DataError(f"{split}: examples with no trained token (rows {rows} after the split): the answer "
                        "was truncated away or is empty; raise data.max_length or clean these rows")
    if stats["truncated"]:
        events.write("warning", f"{split}: {stats['truncated']} examples longer than max_length were truncated")
    return dataset.select_columns(["input_ids", "labels"])
