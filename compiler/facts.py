"""Facts about the model and the data, read without torch and without downloading weights.

Model facts come from a bundled alias, a local directory's config.json, or the Hugging Face
cache; a hub id that is not cached is allowed (it is downloaded when the run starts), with a
note in the plan. Data facts are the columns and row count, read from the files' first rows.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ftc.compiler.catalog import BUNDLED, bundled_config, find_model
from ftc.compiler.estimate import can_estimate, dims, parameter_counts
from ftc.core.data.encode import DataError
from ftc.core.data.files import expand

HUB_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class FactError(Exception):
    """A fact could not be read; `key` is the spec key it concerns, the message says how to fix."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class ModelFacts:
    """What the compiler knows about the base model."""

    base: str
    """As written in the spec."""
    origin: Literal["bundled", "local", "hub"]
    config: dict[str, Any] | None
    """config.json, when it could be read (None for an uncached hub id)."""
    chat_template: bool | None
    """Whether the tokenizer carries a chat template (None: unknown until run time)."""
    facts_from: str = "config.json"
    """Where `config` came from, for the plan's reasons."""

    @property
    def params(self) -> int | None:
        """Parameter count of the decoder-only transformer its config describes (None if unknown)."""
        if not can_estimate(self.config):
            return None
        return sum(parameter_counts(dims(self.config)).values())  # type: ignore[arg-type]


def _has_chat_template(directory: Path) -> bool:
    if (directory / "chat_template.jinja").exists() or (directory / "chat_template.json").exists():
        return True
    if not (directory / "tokenizer_config.json").exists():
        return False
    return bool(read_json_object(directory / "tokenizer_config.json", "tokenizer config").get("chat_template"))


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object file of a model directory; a FactError naming the file, what is wrong and the fix."""
    fix = "repair it or download the model again"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except IsADirectoryError:
        raise FactError("model.base", f"{path} is a directory, not a {what} file; {fix}") from None
    except OSError as exc:
        raise FactError("model.base", f"{path}: cannot be read ({exc.strerror or exc}); {fix}") from None
    except UnicodeDecodeError as exc:
        raise FactError("model.base", f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a {what} is "
                        "UTF-8 JSON: convert it (e.g. iconv -f latin1 -t utf-8) or download the model again") from None
    except json.JSONDecodeError as exc:
        raise FactError("model.base", f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); {fix}") from None
    except RecursionError:
        raise FactError("model.base", f"{path}: JSON nested too deeply to be a {what}; {fix}") from None
    if not isinstance(data, dict):
        raise FactError("model.base", f"{path} does not hold a JSON object (got {type(data).__name__}); is it a "
                        f"{what}?")
    return data


DIMENSIONS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
              "intermediate_size", "head_dim", "max_position_embeddings")
MAX_DIMENSION = 2**31 - 1


def _read_config(path: Path) -> dict[str, Any]:
    data = read_json_object(path, "model config")
    for key in DIMENSIONS:  # a transformers config's sizes are positive integers (null: the model type's default)
        value = data.get(key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool)
                                      and 0 < value <= MAX_DIMENSION):
            raise FactError("model.base", f"{path}: {key} must be a positive integer (got {json.dumps(value)[:40]}); "
                            "the config is damaged or not a transformers model config: repair it or download the "
                            "model again")
    return data


def check_tokenizer_files(directory: Path) -> None:
    """The tokenizer files a model directory has must be readable (a missing tokenizer is the run's to report:
    a config-only directory still plans)."""
    for name in ("tokenizer_config.json", "chat_template.json", "special_tokens_map.json"):
        if (directory / name).exists():
            read_json_object(directory / name, "tokenizer config")
    template = directory / "chat_template.jinja"
    if template.exists():
        try:
            template.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FactError("model.base", f"{template}: cannot be read as UTF-8 text ({exc}); repair it or "
                            "download the model again") from None


def _hf_cache_snapshot(repo_id: str, revision: str | None) -> Path | None:
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", "~/.cache/huggingface")) / "hub")
    repo = hub.expanduser() / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / (revision or "main")
    try:
        commit = ref.read_text(encoding="utf-8").strip() if ref.exists() else revision
    except (OSError, UnicodeDecodeError):  # a damaged cache entry: as if not cached (downloaded at run time)
        commit = revision
    if commit:
        snapshot = repo / "snapshots" / commit
        if (snapshot / "config.json").exists():
            return snapshot
    return None


def model_facts(base: str, revision: str | None = None) -> ModelFacts:
    """Resolve `model.base` to facts; raises FactError for names that cannot be a model."""
    if base in BUNDLED:
        bundled = BUNDLED[base]
        if importlib.util.find_spec(bundled.package) is None:  # located, never imported
            raise FactError("model.base", f"the bundled model {base!r} is not installed; install it with: "
                            f"{bundled.install}")
        return ModelFacts(base, "bundled", dict(bundled_config(base)), bundled.chat_template, "the bundled model's config")
    path = Path(base).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if not config.exists():
            raise FactError("model.base", f"directory {base!r} has no config.json; point to a saved "
                            "transformers model (save_pretrained) or use a hub id")
        facts = ModelFacts(base, "local", _read_config(config), _has_chat_template(path))
        check_tokenizer_files(path)
        return facts
    parts = base.split("/")
    if base.startswith((".", "/", "~")) or len(parts) > 2 or not all(parts) or not set(base) <= HUB_ID_CHARS | {"/"}:
        raise FactError("model.base", f"no such directory (got {base!r}); give a local model directory, "
                        f"a hub id such as 'Qwen/Qwen2.5-0.5B-Instruct', or a bundled model: {', '.join(BUNDLED)}")
    if len(parts) == 1:
        close = difflib.get_close_matches(base, list(BUNDLED), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"bundled models: {', '.join(BUNDLED)}"
        raise FactError("model.base", f"unknown model (got {base!r}); not a directory, not a bundled "
                        f"model and not a hub id of the form 'org/name'; {hint}")
    snapshot = _hf_cache_snapshot(base, revision)
    if snapshot is not None:
        facts = ModelFacts(base, "hub", _read_config(snapshot / "config.json"), _has_chat_template(snapshot),
                           "config.json in the Hugging Face cache")
        check_tokenizer_files(snapshot)
        return facts
    catalog = find_model(base)
    if catalog is not None:
        return ModelFacts(base, "hub", catalog, None, "the built-in catalog")
    return ModelFacts(base, "hub", None, None, "")


# ---------------------------------------------------------------------------------------- data

DATA_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True)
class DataFacts:
    """What the compiler knows about one data source."""

    source: str
    kind: Literal["files", "saved", "hub"]
    loader: str | None
    """The `datasets` builder for files: json, csv or parquet."""
    files: tuple[str, ...] = ()
    columns: tuple[str, ...] | None = None
    """Column names seen in the first rows (None: unknown, e.g. a hub dataset offline)."""
    rows: int | None = None
    sample: dict[str, Any] | None = field(default=None, compare=False)


FACT_ROWS = 100  # rows whose columns are collected (the first ones)


def _file_facts(path: Path, loader: str) -> tuple[list[str], int, dict[str, Any] | None]:
    """Columns of the first rows (read by the data stage's own reader, so its errors are the run's),
    the row count and the first row."""
    from ftc.core.data.read import read_file

    first = [row for _, row in read_file(str(path), loader, FACT_ROWS)]
    columns = list(dict.fromkeys(key for row in first for key in row))
    rows = first_rows = len(first)
    if len(first) == FACT_ROWS:  # counted once per version of the file (files.remembered)
        from ftc.core.data.cache import data_cache
        from ftc.core.data.files import remembered

        rows = int(remembered(str(path), data_cache() / "rows.json", lambda: _count_rows(path, loader)))
    return columns, rows, (first[0] if first_rows and path.suffix != ".parquet" else None)


def _count_rows(path: Path, loader: str) -> int:
    from ftc.core.data.read import encoding_of, lines, read_file

    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # pyarrow comes with datasets; read_file has checked the file

        rows = pq.ParquetFile(path).metadata.num_rows
    elif path.suffix == ".jsonl" and encoding_of(str(path)) != "utf-16":  # counted without decoding (fast)
        with path.open("rb") as handle:
            rows = sum(1 for raw in handle if raw.strip())
    elif path.suffix == ".jsonl":
        rows = sum(1 for _, line in lines(str(path)) if line.strip())
    elif path.suffix == ".txt":
        rows = sum(1 for _ in lines(str(path)))
    else:  # .json is parsed whole anyway; .csv cells may hold line breaks
        rows = sum(1 for _ in read_file(str(path), loader))
    return rows


def data_facts(source: str) -> DataFacts:
    """Columns and rows of a data source; raises FactError for missing or unreadable files."""
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        files = expand(source)  # no link to a directory is followed: a ** over a link loop ends
        if not files:
            raise FactError("data.source", f"the pattern {source!r} matches no file (searched from {Path.cwd()})")
        return _files_facts(source, [Path(f) for f in files])
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _saved_facts(source, path)
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES)
        if not files:
            raise FactError("data.source", f"directory {source!r} holds no .jsonl/.json/.csv/.parquet/.txt file "
                            "and was not saved by datasets (save_to_disk)")
        return _files_facts(source, files)
    if path.suffix in DATA_SUFFIXES or path.exists() or source.startswith((".", "/", "~")):
        if not path.exists():
            raise FactError("data.source", f"file not found: {source} (relative paths are resolved from "
                            f"{Path.cwd()}); check the path or run ftc from the project's root")
        return _files_facts(source, [path])
    if source.count("/") == 1 and set(source) <= HUB_ID_CHARS | {"/"}:
        return DataFacts(source, "hub", None)
    raise FactError("data.source", f"not a file, directory, glob or hub dataset id (got {source!r})")


def _files_facts(source: str, files: list[Path]) -> DataFacts:
    suffixes = {f.suffix for f in files}
    if not suffixes <= set(DATA_SUFFIXES):
        bad = sorted(str(f) for f in files if f.suffix not in DATA_SUFFIXES)[:3]
        raise FactError("data.source", f"unsupported file type: {', '.join(bad)}; use .jsonl, .json, .csv, .parquet "
                        "or .txt")
    loaders = {DATA_SUFFIXES[s] for s in suffixes}
    if len(loaders) > 1:
        raise FactError("data.source", f"{source!r} mixes file types ({', '.join(sorted(suffixes))}); "
                        "use one type per source")
    columns: dict[str, None] = {}
    rows = 0
    sample = None
    for file in files:
        try:
            cols, n, first = _file_facts(file, DATA_SUFFIXES[file.suffix])
        except DataError as exc:
            raise FactError("data.source", str(exc)) from None
        except OSError as exc:
            raise FactError("data.source", f"{file}: cannot be read ({exc.strerror})") from None
        columns.update(dict.fromkeys(cols))
        rows += n
        sample = sample or first
    return DataFacts(source, "files", loaders.pop(), tuple(str(f) for f in files), tuple(columns), rows, sample)


def _saved_facts(source: str, path: Path) -> DataFacts:
    info_path = path / "dataset_info.json"
    columns = None
    if info_path.exists():  # a saved Dataset; a DatasetDict keeps one per split folder
        try:
            features = json.loads(info_path.read_text(encoding="utf-8")).get("features", {})
            columns = tuple(features) if isinstance(features, dict) else None
        except (OSError, ValueError, AttributeError) as exc:
            raise FactError("data.source", f"{info_path}: broken ({type(exc).__name__}: {exc}); the folder must be "
                            "a dataset saved by datasets (save_to_disk): save it again") from None
    return DataFacts(source, "saved", None, (), columns, None)
