"""Encoding a chunk of examples at once, with the same result as encoding each (ftc.core.data.encode).

The per-example path calls the tokenizer's chat template once per prefix and the tokenizer once per
text; the Python around each call costs more than the work. Here a conversation whose template is
content-opaque is rendered from its shape's skeleton, rendered once per shape (ftc.core.data.skeleton);
the prefixes of the other conversations of a chunk are rendered by one pass per kind (with and without
the generation prompt), and the texts tokenized by one call; labels follow the rule of `encode._labels`: for a
byte-level BPE tokenizer from two lookups in the encoding per trained span (`_labels_at_bounds`: no token's
offsets become Python objects), for others in one numpy pass over the chunk's offsets (`_labels_many`). A chunk whose template fails or runs past its
time bound is encoded again example by example, so the failing row is named exactly as before.
Tokenizers that are not transformers' fast tokenizers (ftc.compiler.tokens.LightTokenizer, test doubles)
take the per-example path.
"""

from __future__ import annotations

from itertools import accumulate, chain
from typing import Any

from ftc.core.data.encode import IGNORE, DataError, Render, _check, _labels, _prompt, _renders, _spans, _text, \
    _truncate, encode_example
from ftc.core.data.settings import DataSettings
from ftc.core.data.skeleton import Skeletons, opacity
from ftc.core.sandbox import MAX_SECONDS, deadline


def encode_many(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings) -> list[Any]:
    """[encode_example(tokenizer, e, settings) for e in examples], an exception in an example's place
    (and nothing after it: the caller stops there)."""
    if getattr(tokenizer, "is_fast", False) and len(examples) > 1:
        try:
            with deadline(MAX_SECONDS * 8):  # past it (a slow chunk or a runaway template): one by one
                return _batch(tokenizer, examples, settings)
        except Exception:  # noqa: BLE001 - encoded again one by one, which names the row and the error
            pass
    out: list[Any] = []
    for example in examples:
        try:
            with deadline():  # transformers' chat-template sandbox has no bound of its own (ftc.core.sandbox)
                out.append(encode_example(tokenizer, example, settings))
        except Exception as exc:  # noqa: BLE001 - the caller raises it, naming the row
            out.append(exc)
            break
    return out


def _batch(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings) -> list[Any]:
    out: list[Any] = [None] * len(examples)
    chats = _chats(tokenizer, examples, settings)
    prompts = [p for p, e in enumerate(examples) if "messages" not in e and "prompt" in e]
    texts = [p for p, e in enumerate(examples) if "messages" not in e and "prompt" not in e]
    if prompts:
        heads = _ids(tokenizer, [examples[p]["prompt"] for p in prompts], True)
        answers = _ids(tokenizer, [examples[p]["answer"] for p in prompts], False)
        for p, head, answer in zip(prompts, heads, answers):
            out[p] = _prompt(tokenizer, head, answer, settings.max_length, settings.train_on)
    if texts:
        for p, ids in zip(texts, _ids(tokenizer, [examples[p]["text"] for p in texts], True)):
            out[p] = _text(tokenizer, ids, settings.max_length)
    for p, value in chats.items():
        out[p] = value
    first_error = next((p for p, value in enumerate(out) if isinstance(value, Exception)), None)
    return out if first_error is None else out[:first_error + 1]


def _ids(tokenizer: Any, texts: list[str], special: bool) -> list[list[int]]:
    encodings = _encode(tokenizer, texts, special)
    if encodings is not None:
        return [e.ids for e in encodings]
    return list(tokenizer(texts, add_special_tokens=special)["input_ids"])


def _encode(tokenizer: Any, texts: list[str], special: bool) -> list[Any] | None:
    """The `tokenizers` Encodings transformers' fast tokenizer computes for `tokenizer(texts)` (its own Rust
    call, without converting each result to Python lists); None when the backend is not in the state that
    call would put it in (truncation or padding set, special tokens split): then the tokenizer is called."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch") or backend.truncation is not None \
            or backend.padding is not None or backend.encode_special_tokens != bool(tokenizer.split_special_tokens):
        return None
    return list(backend.encode_batch(texts, add_special_tokens=special))


def _plain(messages: list[dict[str, str]]) -> bool:
    """Messages of plain strings, which transformers' normalisation would not change (it drops None values,
    rebuilds plain types and copies reasoning fields)."""
    from transformers.utils.chat_template_utils import _REASONING_FIELDS

    return all(type(m) is dict and all(type(k) is str and type(v) is str and k not in _REASONING_FIELDS
                                       for k, v in m.items()) for m in messages)


def _template(tokenizer: Any) -> tuple[Any, dict[str, Any]] | None:
    """The template transformers compiles and the arguments it renders it with (None: another transformers)."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template, _plain_template_data
    except ImportError:
        return None
    arguments = _plain_template_data(dict(tokenizer.special_tokens_map))
    return _compile_jinja_template(tokenizer.get_chat_template()), arguments


def _render_all(tokenizer: Any, conversations: list[list[dict[str, str]]], generation: bool) -> list[str]:
    """tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=generation): the
    template transformers compiles, rendered with the arguments transformers gives it, without its
    per-conversation copying, which changes nothing for messages of plain strings (`_plain`)."""
    compiled = _template(tokenizer)
    if compiled is None or not all(_plain(c) for c in conversations):
        return list(tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=generation))
    template, arguments = compiled
    return [template.render(messages=c, tools=None, documents=None, add_generation_prompt=generation, **arguments)
            for c in conversations]


_SKELETONS: dict[tuple[str, str, str], Skeletons | None] = {}


def _skeletons(tokenizer: Any, train_on: str) -> Skeletons | None:
    """The shapes of the tokenizer's template (ftc.core.data.skeleton); None when it is not content-opaque."""
    compiled = _template(tokenizer)
    if compiled is None:
        return None
    template, arguments = compiled
    key = (tokenizer.get_chat_template(), repr(sorted(arguments.items())), train_on)
    if key not in _SKELETONS:
        if len(_SKELETONS) >= 16:
            _SKELETONS.clear()
        trims = opacity(template.environment, key[0])
        _SKELETONS[key] = None if trims is None else Skeletons(
            lambda messages, generation: template.render(messages=messages, tools=None, documents=None,
                                                         add_generation_prompt=generation, **arguments),
            trims, train_on)
    return _SKELETONS[key]


def _chats(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings) -> dict[int, Any]:
    """The encodings of the chunk's conversations by position (a DataError in the place of one that has none):
    a conversation whose shape the template renders content-opaquely from its skeleton (ftc.core.data.skeleton),
    the others by rendering each prefix `_spans` needs."""
    train_on = settings.train_on
    skeletons = _skeletons(tokenizer, train_on)
    needed: dict[int, list[Render]] = {}
    done: dict[int, Any] = {}
    whole: dict[int, str] = {}
    spans: dict[int, list[tuple[int, int]]] = {}
    for p, example in enumerate(examples):
        if "messages" in example:
            messages = example["messages"]
            try:
                _check(messages, train_on)
            except DataError as exc:
                done[p] = exc
                continue
            fast = skeletons.encode(messages) if skeletons is not None and _plain(messages) else None
            if fast is None:
                needed[p] = _renders(messages, train_on)
            else:
                whole[p], spans[p] = fast
    rendered: dict[int, dict[Render, str]] = {p: {} for p in needed}
    for generation in (False, True):
        wanted = [(p, r) for p, renders in needed.items() for r in renders if r[1] == generation]
        if wanted:
            texts = _render_all(tokenizer, [list(examples[p]["messages"][:r[0]]) for p, r in wanted], generation)
            for (p, r), text in zip(wanted, texts):
                rendered[p][r] = text
    for p in needed:
        try:
            spans[p] = _spans(examples[p]["messages"], rendered[p], train_on)
            whole[p] = rendered[p][(len(examples[p]["messages"]), False)]
        except DataError as exc:
            done[p] = exc
    order = sorted(spans)
    if order:
        texts = [whole[p] for p in order]
        encodings = _encode(tokenizer, texts, False)
        if encodings is not None:
            ids = [e.ids for e in encodings]
            if _byte_level(tokenizer):
                labels = [_labels_at_bounds(e, i, spans[p], len(whole[p])) for e, i, p in zip(encodings, ids, order)]
            else:
                labels = _labels_many(ids, [e.offsets for e in encodings], [spans[p] for p in order], texts)
        else:
            encoding = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            ids = [list(i) for i in encoding["input_ids"]]
            labels = [_labels(i, o, spans[p]) for i, o, p in zip(ids, encoding["offset_mapping"], order)]
        for p, row_ids, row_labels in zip(order, ids, labels):
            done[p] = _truncate(row_ids, row_labels, settings.max_length)
    return done


def _byte_level(tokenizer: Any) -> bool:
    """Whether the tokenizer's pipeline is byte-level BPE with offsets as it produced them: no normalizer, a
    ByteLevel pre-tokenizer (after regex splits), a BPE model without dropout, and a post-processor that does not
    trim offsets. Its tokens' offsets then begin in order and are never empty (each token holds at least one byte
    of the text, and its offsets are the characters its bytes come from), so the tokens whose first character
    is inside a span are the run from the first token beginning at or after its start to the first beginning at
    or after its end (`_labels_at_bounds`), found by asking the encoding at the bounds only."""
    import json

    backend = tokenizer._tokenizer
    if backend.normalizer is not None or backend.pre_tokenizer is None or type(backend.model).__name__ != "BPE" \
            or backend.model.dropout:
        return False
    pre = json.loads(backend.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    post = json.loads(backend.post_processor.__getstate__()) if backend.post_processor is not None else {}
    posts = post.get("processors", []) if post.get("type") == "Sequence" else [post] if post else []
    return bool(steps) and steps[-1].get("type") == "ByteLevel" and all(x.get("type") == "Split" for x in steps[:-1]) \
        and all(x.get("type") == "TemplateProcessing" or (x.get("type") == "ByteLevel" and not x.get("trim_offsets"))
                for x in posts)


def _labels_at_bounds(encoding: Any, ids: list[int], spans: list[tuple[int, int]], length: int) -> list[int]:
    """encode._labels for a byte-level encoding (`_byte_level`): each span's tokens found from its bounds."""
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):  # overlapping or unordered: the token loop
        return _labels(ids, encoding.offsets, spans)
    labels = [IGNORE] * len(ids)
    for start, end in spans:
        first, stop = _first_from(encoding, start, length, len(ids)), _first_from(encoding, end, length, len(ids))
        labels[first:stop] = ids[first:stop]
    return labels


def _first_from(encoding: Any, char: int, length: int, count: int) -> int:
    """The first token whose first character is at or after `char` (`count` when none is): the token holding
    the first character from `char` on that a token holds, or the next one when that token begins before `char`."""
    for at in range(char, length):
        token = encoding.char_to_token(at)
        if token is not None:
            while token < count and encoding.token_to_chars(token)[0] < char:
                token += 1
            return token
    return count


def _labels_many(ids: list[list[int]], offsets: list[list[tuple[int, int]]], spans: list[list[tuple[int, int]]],
                 texts: list[str]) -> list[list[int]]:
    """[encode._labels(i, o, s) ...] for a chunk at once: one array of every token's offsets, each row's
    characters and spans shifted past the rows before it (so one sorted search serves all). A row whose
    token offsets go backwards or whose spans overlap takes `_labels` (its token loop)."""
    import numpy as np

    counts = [len(row) for row in ids]
    total = sum(counts)
    odd = {r for r, row in enumerate(spans) if any(a[1] > b[0] for a, b in zip(row, row[1:]))}  # overlapping
    where = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64, count=2 * total)
    begin, end = where[0::2], where[1::2]
    bases = list(accumulate((len(t) for t in texts), initial=0))
    rows = np.repeat(np.arange(len(ids)), counts)
    shifted = begin + np.asarray(bases[:-1], dtype=np.int64)[rows]  # ordered across rows: a token ends in its text
    odd.update(rows[1:][np.diff(shifted) < 0].tolist())  # offsets going backwards
    flat = [(base + a, base + b) for r, (base, row) in enumerate(zip(bases, spans)) if r not in odd for a, b in row]
    if not flat:
        labels = [IGNORE] * total
    else:
        starts, ends = np.asarray(flat, dtype=np.int64).T
        span = np.searchsorted(starts, shifted, side="right") - 1  # the last span starting at or before the token
        trained = (span >= 0) & (shifted < ends[np.maximum(span, 0)]) & (end > begin)
        values = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=total)
        labels = np.where(trained, values, IGNORE).tolist()
    out, at = [], 0
    for row, n in enumerate(counts):
        out.append(_labels(ids[row], offsets[row], spans[row]) if row in odd else labels[at:at + n])
        at += n
    return out
