"""Which files a data source names, and their fingerprint.

`expand` turns a path, a directory's glob or a glob into files without following symbolic links
to directories (a `**` over a link loop ends, and never walks out of the tree). `fingerprint` is
the sha256 of the files' bytes; the hash of each file is remembered beside the data cache with its
size and modification time, so a second start, a resume or another rank re-hashes only files
whose size or time changed (an edit changes the time; a changed byte is then noticed). As in git's
index, a file modified in the last RACY_NS is hashed again each time (an edit within the same
clock tick would keep its time). `remembered` keeps other facts of a file the same way (the compiler's
row count of a data file).
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAGIC = re.compile(r"[*?\[]")
RACY_NS = 2_000_000_000  # a hash is remembered only for files last modified longer ago than this


def expand(source: str) -> list[str]:
    """The files of `source`, sorted: itself, or the regular files its glob matches."""
    path = os.path.expanduser(source)
    if not MAGIC.search(path):
        return [path]
    if "**" not in path:
        return sorted(p for p in glob.glob(path) if os.path.isfile(p))
    parts = path.split(os.sep)
    fixed = next(i for i, part in enumerate(parts) if MAGIC.search(part))
    root = os.sep.join(parts[:fixed]) or ("/" if path.startswith(os.sep) else ".")
    pattern = parts[fixed:]
    found = []
    for directory, _, names in os.walk(root, followlinks=False):
        relative = os.path.relpath(directory, root)
        segments = [] if relative == "." else relative.split(os.sep)
        found += [os.path.join(directory, name) for name in names
                  if _match(segments + [name], pattern) and os.path.isfile(os.path.join(directory, name))]
    return sorted(found)


def _match(segments: list[str], pattern: list[str]) -> bool:
    """Whether path segments match glob segments, `**` standing for zero or more of them."""
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(segments[i:], rest) for i in range(len(segments) + 1))
    return bool(segments) and not segments[0].startswith(".") and fnmatch.fnmatchcase(segments[0], head) \
        and _match(segments[1:], rest)


def source_files(where: str) -> list[str]:
    """The files whose bytes a source's fingerprint covers: a saved dataset folder's files, or `expand`."""
    expanded = os.path.expanduser(where)
    if os.path.isdir(expanded):
        return sorted(os.path.join(d, n) for d, _, names in os.walk(expanded) for n in names
                      if not fnmatch.fnmatch(n, "*.lock"))
    return expand(where)


def _known(path: str, known: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """compute() of a file, from `known` when its size and modification time are unchanged (and kept there)."""
    status = os.stat(path)
    key = os.path.abspath(path)
    entry = known.get(key)
    if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [status.st_size, status.st_mtime_ns]:
        return entry[2]
    value = compute()
    if time.time_ns() - status.st_mtime_ns > RACY_NS:  # a file written just now may change again in the
        known[key] = [status.st_size, status.st_mtime_ns, value]  # same clock tick: not kept
    return value


def _file_hash(path: str, known: dict[str, Any]) -> str:
    """sha256 of a file's bytes, from `known` when its size and modification time are unchanged."""
    def digest() -> str:
        hashed = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                hashed.update(block)
        return hashed.hexdigest()

    return str(_known(path, known, digest))


def remembered(path: str, memo: Path, compute: Callable[[], Any]) -> Any:
    """compute() of the file `path` (a JSON value, e.g. its row count), remembered in the JSON file `memo`
    with the file's size and modification time, as its hash is (see the module docstring)."""
    known = read_memo(memo)
    before = dict(known)
    value = _known(path, known, compute)
    if known != before:
        write_memo(memo, known)
    return value


def read_memo(memo: Path | None) -> dict[str, Any]:
    """A JSON object remembered in `memo` ({} when absent, unreadable or not an object)."""
    if memo is None or not memo.is_file():
        return {}
    try:
        loaded = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def write_memo(memo: Path, known: dict[str, Any]) -> None:
    """Write `memo` atomically (a reader sees the old file or the new one); a read-only cache keeps nothing."""
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        partial = memo.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(known), encoding="utf-8")
        os.replace(partial, memo)
    except OSError:  # a read-only cache: computed again next time
        pass


def fingerprint(sources: list[str | None], hashes: Path | None = None) -> str:
    """sha256 over the sources' files (name and bytes; a hub id counts by its name). `hashes`: the
    JSON file remembering each file's hash with its size and time (see the module docstring)."""
    known = read_memo(hashes)
    before = dict(known)
    digest = hashlib.sha256()
    for where in sources:
        if not where:
            continue
        paths = [p for p in source_files(where) if os.path.isfile(p)]
        if not paths:
            digest.update(f"id:{where}\0".encode())
        for path in sorted(paths):
            digest.update(os.path.basename(path).encode() + b"\0" + _file_hash(path, known).encode() + b"\0")
    if hashes is not None and known != before:
        write_memo(hashes, known)
    return digest.hexdigest()
