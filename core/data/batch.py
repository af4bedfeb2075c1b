"""Encoding a chunk of examples at once, with the same result as encoding each (ftc.core.data.encode).

The per-example path calls the tokenizer's chat template once per prefix and the tokenizer once per
text; the Python around each call costs more than the work. Here a conversation whose template is
content-opaque is rendered from its shape's skeleton, rendered once per shape (ftc.core.data.skeleton);
the prefixes of the other conversations of a chunk are rendered by one pass per kind (with and without
the generation prompt), and the texts tokenized by one call; labels follow the rule of `encode._labels`: for a
byte-level BPE tokenizer from its tokens' widths in bytes (`_labels_by_bytes`: the tokenizer computes no
offsets, a quarter of its time), for others in one numpy pass over the chunk's offsets (`_labels_many`),
each one pass over the chunk. A chunk whose template fails or runs past its
time bound is encoded again example by example, so the failing row is named exactly as before.
Tokenizers that are not transformers' fast tokenizers (ftc.compiler.tokens.LightTokenizer, test doubles)
take the per-example path.
"""

from __future__ import annotations

from itertools import accumulate, chain
from typing import Any

from ftc.core.data.encode import IGNORE, DataError, Render, _check, _labels, _prompt, _renders, _spans, _text, \
    inside_spans, overlapping, \
    _truncate, encode_example
from ftc.core.data.settings import DataSettings
from ftc.core.data.skeleton import Skeletons, opacity
from ftc.core.sandbox import MAX_SECONDS, deadline


def encode_many(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings,
                arrays: bool = False) -> list[Any]:
    """[encode_example(tokenizer, e, settings) for e in examples], an exception in an example's place
    (and nothing after it: the caller stops there). With `arrays`, an encoding's input_ids and labels may be
    array('i') rather than lists (the cache writer's form; made without Python ints where labels come from
    byte widths)."""
    if getattr(tokenizer, "is_fast", False) and len(examples) > 1:
        try:
            with deadline(MAX_SECONDS * 8):  # past it (a slow chunk or a runaway template): one by one
                return _batch(tokenizer, examples, settings, arrays)
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


def _batch(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings, arrays: bool) -> list[Any]:
    out: list[Any] = [None] * len(examples)
    chats = _chats(tokenizer, examples, settings, arrays)
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
    encodings = _encode(tokenizer, texts, special, offsets=False)
    if encodings is not None:
        return [e.ids for e in encodings]
    return list(tokenizer(texts, add_special_tokens=special)["input_ids"])


def _encode(tokenizer: Any, texts: list[str], special: bool, offsets: bool = True) -> list[Any] | None:
    """The `tokenizers` Encodings transformers' fast tokenizer computes for `tokenizer(texts)` (its own Rust
    call, without converting each result to Python lists); None when the backend is not in the state that
    call would put it in (truncation or padding set, special tokens split): then the tokenizer is called.
    Without `offsets` the encodings' offsets are not computed (a quarter of the tokenizer's time)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch") or backend.truncation is not None \
            or backend.padding is not None or backend.encode_special_tokens != bool(tokenizer.split_special_tokens):
        return None
    encode = backend.encode_batch if offsets or not hasattr(backend, "encode_batch_fast") else backend.encode_batch_fast
    return list(encode(texts, add_special_tokens=special))


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


def _chats(tokenizer: Any, examples: list[dict[str, Any]], settings: DataSettings, arrays: bool) -> dict[int, Any]:
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
        widths = _byte_widths(tokenizer)
        encodings = _encode(tokenizer, texts, False, offsets=widths is None)
        if encodings is not None:
            ids = [e.ids for e in encodings]
            if widths is not None:
                ids, labels = _labels_by_bytes(widths, ids, [spans[p] for p in order], texts, arrays)
                if misfits := [r for r, row in enumerate(labels) if row is None]:  # its offsets decide
                    again = _encode(tokenizer, [texts[r] for r in misfits], False)
                    for r, row in zip(misfits, _labels_many([ids[r] for r in misfits], [e.offsets for e in again],
                                                            [spans[order[r]] for r in misfits],
                                                            [texts[r] for r in misfits])):
                        labels[r] = row
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
    """Whether the tokenizer's pipeline is byte-level BPE whose tokens' bytes, concatenated, are the text's: no
    normalizer, a ByteLevel pre-tokenizer that adds no prefix space (after regex splits that remove nothing), a
    BPE model without dropout, and a post-processor that does not trim offsets. A token's offsets are then the
    characters its bytes come from, and follow from the widths of the tokens before it (`_labels_by_bytes`)."""
    import json

    backend = tokenizer._tokenizer
    if backend.normalizer is not None or backend.pre_tokenizer is None or type(backend.model).__name__ != "BPE" \
            or backend.model.dropout:
        return False
    pre = json.loads(backend.pre_tokenizer.__getstate__())
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    post = json.loads(backend.post_processor.__getstate__()) if backend.post_processor is not None else {}
    posts = post.get("processors", []) if post.get("type") == "Sequence" else [post] if post else []
    return bool(steps) and steps[-1].get("type") == "ByteLevel" and not steps[-1].get("add_prefix_space") \
        and all(x.get("type") == "Split" and x.get("behavior") != "Removed" for x in steps[:-1]) \
        and all(x.get("type") == "TemplateProcessing" or (x.get("type") == "ByteLevel" and not x.get("trim_offsets"))
                for x in posts)


_WIDTHS: dict[tuple[int, int], tuple[Any, Any]] = {}  # (id of a backend, its vocabulary size) -> (it, widths)


def _byte_widths(tokenizer: Any) -> Any:
    """The number of bytes of the text each token id stands for, for a byte-level tokenizer (`_byte_level`), so
    that its offsets need not be computed (`_labels_by_bytes`); None for another tokenizer, or one whose
    vocabulary has a token not written in ByteLevel's alphabet of one character per byte."""
    import numpy as np

    if not _byte_level(tokenizer):
        return None
    backend = tokenizer._tokenizer
    key = (id(backend), backend.get_vocab_size(with_added_tokens=True))
    if key not in _WIDTHS:
        from tokenizers import pre_tokenizers

        if len(_WIDTHS) >= 16:
            _WIDTHS.clear()
        alphabet = set(pre_tokenizers.ByteLevel.alphabet())
        added = backend.get_added_tokens_decoder()
        widths = np.zeros(key[1], dtype=np.int64)
        for token, number in backend.get_vocab(with_added_tokens=True).items():
            if number in added:
                widths[number] = len(added[number].content.encode("utf-8"))
            elif set(token) <= alphabet:
                widths[number] = len(token)
            else:
                widths = None
                break
        _WIDTHS[key] = (backend, widths)  # the backend held: its id is not reused while the entry lives
    return _WIDTHS[key][1]


def _labels_by_bytes(widths: Any, ids: list[list[int]], spans: list[list[tuple[int, int]]], texts: list[str],
                     arrays: bool = False) -> tuple[list[Any], list[Any]]:
    """encode._labels for a chunk of a byte-level tokenizer's encodings (`_byte_widths`), without their offsets: a
    token's first byte is the sum of the widths of the tokens before it, and it begins inside a span exactly when
    its first character does (the span's bounds are characters, so at character boundaries). A row whose tokens'
    bytes are not as many as its text's (an added token that strips the whitespace beside it), or whose spans
    overlap, is None: its offsets decide. Returns (ids, labels): with `arrays` both as array('i') rows, made
    without a Python int per token; else `ids` as given and lists."""
    from array import array

    import numpy as np

    counts = [len(row) for row in ids]
    total = sum(counts)
    values = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=total)
    width = widths[values]
    ends = np.cumsum(width)
    begins = ends - width
    firsts = list(accumulate(counts, initial=0))
    bases = np.concatenate(([0], ends))[firsts].tolist()  # the bytes before each row's first token, and all
    fits: list[int] = []
    flat: list[tuple[int, int]] = []
    for r, (text, row) in enumerate(zip(texts, spans)):
        ascii_ = text.isascii()
        if bases[r + 1] - bases[r] != (len(text) if ascii_ else len(text.encode("utf-8"))) \
                or overlapping(row):
            continue
        fits.append(r)
        base = bases[r]
        flat += [(base + a, base + b) for a, b in row] if ascii_ else \
            [(base + len(text[:a].encode("utf-8")), base + len(text[:b].encode("utf-8"))) for a, b in row]
    labels = np.where(inside_spans(begins, flat), values, IGNORE)
    every = array("i", labels.astype(np.int32).tobytes()) if arrays else labels.tolist()
    out: list[Any] = [None] * len(ids)
    for r in fits:
        out[r] = every[firsts[r]:firsts[r + 1]]
    if arrays:
        tokens = array("i", values.astype(np.int32).tobytes())
        ids = [tokens[firsts[r]:firsts[r + 1]] for r in range(len(ids))]
    return ids, out


def _labels_many(ids: list[list[int]], offsets: list[list[tuple[int, int]]], spans: list[list[tuple[int, int]]],
                 texts: list[str]) -> list[list[int]]:
    """[encode._labels(i, o, s) ...] for a chunk at once: one array of every token's offsets, each row's
    characters and spans shifted past the rows before it (so one sorted search serves all). A row whose
    token offsets go backwards or whose spans overlap takes `_labels` (its token loop)."""
    import numpy as np

    counts = [len(row) for row in ids]
    total = sum(counts)
    odd = {r for r, row in enumerate(spans) if overlapping(row)}
    where = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64, count=2 * total)
    begin, end = where[0::2], where[1::2]
    bases = list(accumulate((len(t) for t in texts), initial=0))
    rows = np.repeat(np.arange(len(ids)), counts)
    shifted = begin + np.asarray(bases[:-1], dtype=np.int64)[rows]  # ordered across rows: a token ends in its text
    odd.update(rows[1:][np.diff(shifted) < 0].tolist())  # offsets going backwards
    flat = [(base + a, base + b) for r, (base, row) in enumerate(zip(bases, spans)) if r not in odd for a, b in row]
    values = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=total)
    labels = np.where(inside_spans(shifted, flat) & (end > begin), values, IGNORE).tolist()
    out, at = [], 0
    for row, n in enumerate(counts):
        out.append(_labels(ids[row], offsets[row], spans[row]) if row in odd else labels[at:at + n])
        at += n
    return out
