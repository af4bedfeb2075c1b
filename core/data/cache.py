"""The data cache: what the data stage computed once, reused by a second `ftc data`, a resume and the
other ranks of a run.

An entry is keyed by everything that determines the result: the data's fingerprint (its files'
bytes, files.py), the tokenizer (its vocabulary, rules, chat template and special tokens), the
DataSettings and the stage's own options (micro-batch size, packing, mixing weights). It holds the
encoded examples as Arrow files (memory-mapped when read back), the training order of a mix, the
statistics and the dropped rows. The first run streams the examples into the entry as they are
encoded (`Writer`), then writes the splits in one pass (`split_file`). Writers take a lock on the
entry, so ranks starting together compute it once; an entry is written to a temporary folder and
renamed whole. Hub datasets are not cached (their bytes are not fingerprinted here).

A hit needs no tokenizer: a tokenizer loaded from a local directory remembers its key (tokenizers.json
beside the entries) under the key of its files' bytes and the libraries' versions, so `ftc data` finds
the entry from the files alone (`Deferred`) and loads neither transformers nor the tokenizer; train.py,
which has its tokenizer loaded, always computes the key from the tokenizer itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ftc.core.bundled import cache_root
from ftc.core.data.files import read_memo, write_memo

STAGE_VERSION = "1"  # raised whenever the stage's output for the same inputs changes


def code_version() -> str:
    """STAGE_VERSION and a hash of the data stage's own source files: an edited stage misses the cache."""
    if "code" not in _CODE:
        digest = hashlib.sha256(STAGE_VERSION.encode())
        for path in sorted(Path(__file__).parent.glob("*.py")):
            digest.update(path.read_bytes())
        _CODE["code"] = digest.hexdigest()[:16]
    return _CODE["code"]


_CODE: dict[str, str] = {}
COLUMNS = ("source", "row", "split", "example", "input_ids", "labels", "length", "truncated", "trained_tokens")


def data_cache() -> Path:
    """The data cache folder (not created): $FTC_DATA_CACHE, else FTC_CACHE/data (see ftc.core.bundled.cache_root),
    shared by every run and rank on this machine."""
    if env := os.environ.get("FTC_DATA_CACHE"):
        return Path(env).expanduser()
    return cache_root() / "data"


def hashes_file() -> Path:
    return data_cache() / "hashes.json"


def tokenizer_key(tokenizer: Any) -> str:
    """sha256 of what makes a tokenizer encode as it does: its rules and vocabulary, chat template and
    special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    parts = [backend.to_str() if hasattr(backend, "to_str") else type(tokenizer).__name__,
             str(getattr(tokenizer, "chat_template", None))]
    parts += [str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token", "eos_token_id")]  # not pad
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


TOKENIZER_FILES = ("tokenizer*", "chat_template*", "special_tokens*", "added_tokens*", "vocab*", "merges*", "*.model",
                   "*.tiktoken", "config.json", "*.py")  # what AutoTokenizer.from_pretrained reads from a directory


class Deferred:
    """A tokenizer from a local directory, loaded only when the stage needs it (a cache miss, or tokens to
    show): a hit keys it by the files it is loaded from (`tokenizer_id`), so it is never loaded then."""

    def __init__(self, directory: Path, load: Callable[[], Any]) -> None:
        self.directory, self._load, self._tokenizer = directory, load, None

    def get(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer


def loaded(tokenizer: Any) -> Any:
    """The tokenizer itself (a Deferred one loaded now)."""
    return tokenizer.get() if isinstance(tokenizer, Deferred) else tokenizer


def _files_key(directory: Path, chat: bool) -> str:
    """What a tokenizer loaded from `directory` is made of: its files' bytes, the versions of the libraries that
    read them, and whether ChatML is added to it (`chat`: ensure_chat_template, which train.py and `ftc data`
    apply to chat-shaped data without data.template)."""
    from importlib.metadata import version

    from ftc.core.data.files import fingerprint

    files = sorted({str(p) for pattern in TOKENIZER_FILES for p in directory.glob(pattern) if p.is_file()})
    described = [fingerprint(files, hashes_file()), version("transformers"), version("tokenizers"), chat]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def tokenizer_id(tokenizer: Any, chat: bool) -> str:
    """The tokenizer's part of the stage key: `tokenizer_key` of the loaded tokenizer. A loaded tokenizer
    from a local directory remembers its key beside the data cache under its files' key (`_files_key`); a
    Deferred one takes the remembered key when its files are unchanged, without loading. A loaded
    tokenizer always computes its own key, so what trains is never keyed from memory."""
    if isinstance(tokenizer, Deferred):
        directory: Path | None = tokenizer.directory
    else:
        named = Path(str(getattr(tokenizer, "name_or_path", "") or "")).expanduser()
        directory = named if str(named) not in ("", ".") and named.is_dir() else None
    memo = data_cache() / "tokenizers.json"
    files = _files_key(directory, chat) if directory is not None else None
    known = read_memo(memo)
    if isinstance(tokenizer, Deferred) and files in known:
        return str(known[files])
    content = tokenizer_key(loaded(tokenizer))
    if files is not None and known.get(files) != content:
        write_memo(memo, known | {files: content})
    return content


def stage_key(data: str, tokenizer: str, settings: Any, options: dict[str, Any]) -> str:
    """The entry's key; `tokenizer` is `tokenizer_id`'s."""
    described = {"version": code_version(), "data": data, "tokenizer": tokenizer,
                 "settings": dataclasses.asdict(settings), "options": options}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def holds(kind: str | None, mix: Sequence[dict[str, Any]]) -> bool:
    """Whether the data stage keeps its result here: not for hub data, whose bytes are not on disk to fingerprint."""
    return kind != "hub" and all(m["kind"] != "hub" for m in mix)


def writable() -> bool:
    """Whether entries can be written here (the folder exists or can be made, and takes a file)."""
    folder = data_cache()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        return False


@contextlib.contextmanager
def locked(key: str) -> Iterator[Path | None]:
    """The entry's folder, under its lock (None when the cache cannot be written)."""
    import fcntl

    folder = data_cache() / key
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        handle = open(folder.parent / f"{key}.lock", "a+")  # noqa: SIM115 - held for the block
    except OSError:
        yield None
        return
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield folder


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("source", pa.string()), ("row", pa.int64()), ("split", pa.string()), ("example", pa.string()),
                      ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("length", pa.int64()),
                      ("truncated", pa.bool_()), ("trained_tokens", pa.int64())])


def _token_lists(lists: Sequence[list[int]]) -> Any:
    """An Arrow list<int32> array of token lists, built from one flat buffer (pyarrow's conversion of
    nested Python lists inspects every element: ~10x slower)."""
    from array import array

    import numpy as np
    import pyarrow as pa

    flat = array("i")
    for values in lists:
        flat.extend(values)
    offsets = np.zeros(len(lists) + 1, dtype=np.int32)
    np.cumsum([len(values) for values in lists], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(np.frombuffer(flat, dtype=np.int32)))


class Writer:
    """Encoded examples appended to an Arrow stream file as they come (one record batch per call)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path, self.schema = path, _schema()
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)

    def __call__(self, items: Sequence[Any]) -> None:
        import pyarrow as pa

        from ftc.core.data.clean import example_json

        if not items:
            return
        columns = {"source": [e.source for e in items], "row": [e.row for e in items], "split": [e.split for e in items],
                   "example": [example_json(e.example).decode() for e in items]}
        columns |= {name: _token_lists([e.encoding[name] for e in items]) for name in ("input_ids", "labels")}
        columns |= {name: [e.encoding[name] for e in items] for name in COLUMNS[6:]}
        self._writer.write_batch(pa.record_batch(columns, schema=self.schema))

    def batch(self, batch: Any) -> None:
        """Append an Arrow record batch of this schema."""
        self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()
        self._sink.close()


def split_file(source: Path, targets: dict[str, tuple[Path, Sequence[int]]]) -> None:
    """Write the rows of the Arrow file `source` at each target's positions (ascending) to its file, as the
    split named by its key. One pass, reading a batch at a time (not memory-mapped: the pages read are not
    kept in this process), so memory holds one batch."""
    import numpy as np
    import pyarrow as pa

    writers = {split: Writer(path) for split, (path, _) in targets.items()}
    wanted = {split: np.asarray(positions, dtype=np.int64) for split, (_, positions) in targets.items()}
    try:
        start = 0
        with pa.OSFile(str(source)) as handle, pa.ipc.open_stream(handle) as reader:
            column = reader.schema.get_field_index("split")
            for batch in reader:
                end = start + batch.num_rows
                for split, positions in wanted.items():
                    mine = positions[np.searchsorted(positions, start):np.searchsorted(positions, end)] - start
                    if len(mine):
                        part = batch.take(pa.array(mine))
                        part = part.set_column(column, "split", pa.array([split] * len(part), type=pa.string()))
                        writers[split].batch(part)
                start = end
    finally:
        for writer in writers.values():
            writer.close()


def finish(partial: Path, folder: Path, meta: dict[str, Any], dropped: Sequence[dict[str, Any]]) -> None:
    """Complete the entry written in `partial` (train.arrow and validation.arrow there) and move it to `folder`."""
    (partial / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with (partial / "dropped.jsonl").open("w", encoding="utf-8") as handle:
        for item in dropped:
            handle.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
    os.replace(partial, folder)


def partial_folder(folder: Path) -> Path:
    """A new folder to write the entry `folder` in (renamed whole by `finish`)."""
    partial = folder.with_name(folder.name + f".{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


class Stored(Sequence):  # type: ignore[type-arg]
    """A split read back from the cache: a sequence of Encoded, each built when asked for, over the
    memory-mapped Arrow file (pyarrow only: `datasets` is imported when the trainer asks for a Dataset)."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa

        self.path = path
        with pa.ipc.open_stream(pa.memory_map(str(path))) as reader:
            self.table = reader.read_all()  # zero-copy: the buffers stay in the mapped file

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        from ftc.core.data.encode import Encoded

        row = self.table.slice(range(len(self))[index], 1).to_pylist()[0]
        encoding = {name: row[name] for name in COLUMNS[4:]}
        return Encoded(row["row"], json.loads(row["example"]), encoding, row["split"], row["source"])

    def dataset(self) -> Any:
        """The split as a memory-mapped `datasets.Dataset` (every column)."""
        from datasets import Dataset

        return Dataset.from_file(str(self.path))


def load(folder: Path) -> dict[str, Any] | None:
    """The entry's parts (train, validation: Stored; weighted order, stats, dropped), None when absent."""
    if not (folder / "meta.json").is_file():
        return None
    import pyarrow as pa

    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        splits = {split: Stored(folder / f"{split}.arrow") for split in ("train", "validation")}
        with (folder / "dropped.jsonl").open(encoding="utf-8") as handle:
            dropped = [json.loads(line) for line in handle]
    except (OSError, ValueError, pa.ArrowException):  # a damaged entry is computed again
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return splits | {"stats": meta["stats"], "weighted": meta["weighted"], "dropped": dropped}
