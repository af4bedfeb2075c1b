"""Real token lengths at compile time, without torch or transformers.

`ftc compile` measures the data's token lengths with the model's own tokenizer.json (the
`tokenizers` library) and its chat template (rendered in a jinja2 sandbox configured like
transformers' `apply_chat_template`), through the very functions train.py uses to map and encode
rows (ftc.core.data.stage, which is torch-free), with the run's own DataSettings (`data_settings`).
The planner uses the lengths for `max_length = "auto"` and for the sequence length of the estimate.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ftc.compiler.facts import DataFacts, FactError, ModelFacts, _hf_cache_snapshot, read_json_object
from ftc.compiler.spec import FORMAT_FIELDS, Spec
from ftc.core.bundled import MARKER, cache_root
from ftc.core.data.settings import DataSettings

MEASURE_ROWS = 1000  # rows measured at most (the first ones); enough for stable percentiles, fast to compile
UNBOUNDED = 1 << 30  # max_length while measuring for "auto": no example is truncated (or left untrained) by it


def data_settings(spec: Spec, max_length: int) -> DataSettings:
    """The run's DataSettings, decided once from the spec: the plan holds these values (so `ftc data`
    runs them), train.py rebuilds the object from its CONFIG block, and the compile-time measurement
    runs it. `max_length` is the resolved one ("auto" is decided from the measured lengths)."""
    d, c = spec.data, spec.data.clean
    columns = {f: d.columns.get(f, f) for f in FORMAT_FIELDS[d.format]
               if f in d.columns or not (d.format == "chat" and f != "messages")}  # chat: role/content auto-detected
    return DataSettings(format=d.format, columns=columns, max_length=max_length, roles=dict(d.roles),
                        template=d.template, train_on="inputs_too" if d.format == "text" else d.train_on,
                        validation=d.validation, seed=spec.train.seed, dedup=c.dedup, near_dedup=c.near_dedup,
                        min_tokens=c.min_tokens, max_tokens=c.max_tokens, untrained=c.untrained)


@dataclass(frozen=True)
class TokenFacts:
    """Token lengths of the first rows of the data, as train.py will encode them (before truncation)."""

    examples: int
    """Examples measured: the rows the data stage keeps (mapped, cleaned)."""
    rows_read: int
    """Rows read for it (the first MEASURE_ROWS at most)."""
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    tokenizer: str
    """Where the tokenizer came from."""
    lengths: tuple[int, ...] = field(default=(), compare=False, repr=False)
    """Each measured example's token length (sorted), for packing's row count."""

    @property
    def kept_share(self) -> float:
        """The share of rows read that the data stage keeps (mapped, cleaned, not dropped)."""
        return self.examples / self.rows_read if self.rows_read else 1.0

    def packed_share(self, max_length: int) -> float:
        """Rows packing fills per example kept, at `max_length` (from the measured lengths)."""
        from ftc.core.data.stats import packed_rows

        lengths = [min(n, max_length) for n in self.lengths]
        return packed_rows(lengths, max_length) / len(lengths) if lengths else 1.0


class LightTokenizer:
    """The slice of a transformers tokenizer that ftc.core.data.encode uses, from tokenizer.json."""

    def __init__(self, directory: Path) -> None:
        """Raises FactError naming the file when a tokenizer file cannot be read."""
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise FactError("model.base", f"{directory / 'tokenizer.json'}: the tokenizers library cannot read it "
                            f"({str(exc)[:120]}); re-save the tokenizer (tokenizer.save_pretrained) or download "
                            "the model again") from None
        config: dict[str, Any] = {}
        if (directory / "tokenizer_config.json").exists():
            config = read_json_object(directory / "tokenizer_config.json", "tokenizer config")
        self.special = {name: _token_text(config.get(name)) for name in
                        ("bos_token", "eos_token", "pad_token", "unk_token")}
        template = config.get("chat_template")
        if (directory / "chat_template.jinja").exists():
            template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        elif (directory / "chat_template.json").exists():
            template = read_json_object(directory / "chat_template.json", "chat template").get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                            None)
        if template is not None and not isinstance(template, str):
            raise FactError("model.base", f"{directory}: the chat template must be a string (got "
                            f"{type(template).__name__}); repair tokenizer_config.json or chat_template.json")
        self.chat_template: str | None = template
        eos = self.eos_token = self.special["eos_token"]
        self.eos_token_id = self._tokenizer.token_to_id(eos) if eos else None
        self._compiled: Any = None

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = False) -> str:
        if self._compiled is None:
            if self.chat_template is None:
                from ftc.core.data.encode import CHATML_TEMPLATE

                self.chat_template = CHATML_TEMPLATE  # what train.py adds (ensure_chat_template)
            self._compiled = _environment().from_string(self.chat_template)
        return str(self._compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         tools=None, documents=None, **self.special))

    def __call__(self, text: str, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": encoding.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = encoding.offsets
        return out


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _environment() -> Any:
    """A jinja2 sandbox set up like transformers' chat-template environment, with ftc.core.sandbox's bounds."""
    import jinja2
    import jinja2.ext

    from ftc.core.sandbox import bounded_environment, bounded_filter

    class Generation(jinja2.ext.Extension):  # {% generation %} marks answers for transformers; here: render it
        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = bounded_environment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = bounded_filter(tojson)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def tokenizer_dir(base: str, origin: str, revision: str | None) -> Path | None:
    """The directory holding the model's tokenizer.json, when it is on this machine."""
    if origin == "local":
        directory: Path | None = Path(base).expanduser()
    elif origin == "bundled":
        directory = cache_root() / "models" / base
        if not (directory / MARKER).is_file():
            return None
    else:
        directory = _hf_cache_snapshot(base, revision)
    if directory is None or not (directory / "tokenizer.json").is_file():
        return None
    return directory


def read_rows(files: tuple[str, ...], loader: str | None, limit: int = MEASURE_ROWS) -> list[dict[str, Any]]:
    """The first `limit` rows of local data files, read as train.py reads them (ftc.core.data.read)."""
    from ftc.core.data.read import read_paths

    return read_paths(files, loader, limit)


def data_description(spec: Spec, model: ModelFacts, data: DataFacts,
                     mix: tuple[DataFacts, ...]) -> dict[str, Any] | None:
    """What the data stage's result on the first rows depends on: the data stage's and this module's code, the
    data settings and seed, the files' and the tokenizer's fingerprints (None: tokenizer or files not here)."""
    from ftc.core.data.cache import code_version, hashes_file
    from ftc.core.data.files import fingerprint

    directory = tokenizer_dir(spec.model.base, model.origin, spec.model.revision)
    sources = [f for f in (data, *mix) if f.kind == "files"]
    if directory is None or not sources:
        return None
    tokenizer_files = [str(p) for p in sorted(directory.glob("*")) if p.name.startswith(("tokenizer", "chat_template",
                                                                                          "special_tokens"))]
    code = [code_version(), hashlib.sha256(Path(__file__).read_bytes()).hexdigest()]  # this module too
    return {"version": code, "rows": MEASURE_ROWS, "spec": spec.data.model_dump(mode="json"),
            "seed": spec.train.seed, "sources": [[s.source, s.loader, list(s.files)] for s in sources],
            "data": fingerprint([f for s in sources for f in s.files], hashes_file()),
            "tokenizer": [str(directory), fingerprint(tokenizer_files, hashes_file())]}


def measure_data(spec: Spec, model: ModelFacts, data: DataFacts,
                 mix: tuple[DataFacts, ...]) -> tuple[TokenFacts | None, tuple[str, str] | None]:
    """`_measure`, remembered in the data cache by the files' and the tokenizer's fingerprints and the
    settings, so compiling again (a second `ftc data`, `ftc run` after it) does not encode the rows again."""
    import dataclasses

    from ftc.core.data.cache import data_cache

    described = data_description(spec, model, data, mix)
    if described is None:
        return None, None
    path = data_cache() / "measured" / (hashlib.sha256(json.dumps(described, sort_keys=True, default=str)
                                                       .encode()).hexdigest()[:32] + ".json")
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        tokens = TokenFacts(**kept["tokens"] | {"lengths": tuple(kept["tokens"]["lengths"])}) if kept["tokens"] else None
        return tokens, tuple(kept["problem"]) if kept["problem"] else None  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    tokens, problem = _measure(spec, model, data, mix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps({"tokens": dataclasses.asdict(tokens) if tokens else None, "problem": problem}),
                           encoding="utf-8")
        os.replace(partial, path)
    except OSError:  # a read-only cache: measured again next time
        pass
    return tokens, problem


def _measure(spec: Spec, model: ModelFacts, data: DataFacts,
             mix: tuple[DataFacts, ...]) -> tuple[TokenFacts | None, tuple[str, str] | None]:
    """Run the data stage (ftc.core.data.stage.prepare_data, as train.py does) on the first rows of
    the spec's local data files with the model's tokenizer: the token lengths of the kept examples,
    and the stage's error (unmappable roles, untrained examples, nothing left) as a message.
    (None, None) when the tokenizer or the files are not here."""
    from ftc.core.data.encode import DataError
    from ftc.core.data.stage import prepare_data
    from ftc.core.data.stats import percentile

    directory = tokenizer_dir(spec.model.base, model.origin, spec.model.revision)
    sources = [f for f in (data, *mix) if f.kind == "files"]
    if directory is None or not sources:
        return None, None
    try:
        tokenizer = LightTokenizer(directory)
    except FactError as exc:
        return None, (exc.key, str(exc))
    except Exception:  # noqa: BLE001 - an unreadable tokenizer: planning goes on without lengths
        return None, None
    per_source = []
    budget = MEASURE_ROWS
    for source in sources:
        try:
            rows = read_rows(source.files, source.loader, budget)
        except DataError as exc:  # the message the run would give, with the file and the row
            return None, ("data.source" if source is data else "data.mix", str(exc))
        per_source.append((source.source, rows))
        budget -= len(rows)
    d = spec.data
    if tokenizer.chat_template is None and d.format != "text" and d.template is None:
        from ftc.core.data.encode import chatml_missing_tokens

        missing = chatml_missing_tokens(tokenizer)
        if missing:
            return None, ("data.format", f"{directory.name}'s tokenizer has no chat template, and the ChatML "
                          f"markers ftc would add ({', '.join(missing)}) are not tokens of its vocabulary; set "
                          "data.template to a plain-text prompt template (the answer then ends with EOS), use "
                          "format = \"text\", or fine-tune a model that has a chat template")
    # every row read is measured (the held-out share too; a validation source is not read here)
    settings = replace(data_settings(spec, UNBOUNDED if d.max_length == "auto" else int(d.max_length)), validation=0.0)
    weights = {entry.source: entry.weight for entry in d.mix}
    (name, rows), *others = per_source
    if d.format == "preference":
        return _measure_pairs(tokenizer, settings, name, rows, directory, MEASURE_ROWS - budget)
    try:
        prepared = prepare_data(rows, tokenizer, settings, source=name,
                                mix=[(n, r, weights.get(n, 1.0)) for n, r in others])
    except DataError as exc:
        return None, ("data.source", str(exc))
    except Exception:  # noqa: BLE001 - a chat template that fails outside transformers: the run will tell
        return None, None
    lengths = sorted(e.encoding["length"] for e in prepared.train + prepared.validation)
    return TokenFacts(len(lengths), MEASURE_ROWS - budget, *(percentile(lengths, q) for q in (50, 90, 95, 99)),
                      lengths[-1], f"{directory}/tokenizer.json", tuple(lengths)), None


def _measure_pairs(tokenizer: Any, settings: DataSettings, name: str, rows: list[dict[str, Any]], directory: Path,
                   rows_read: int) -> tuple[TokenFacts | None, tuple[str, str] | None]:
    """The token lengths of preference data: each pair's two sequences (prompt + chosen, prompt + rejected)."""
    from ftc.core.data.encode import DataError
    from ftc.core.data.preference import prepare_preference
    from ftc.core.data.stats import percentile

    try:
        data = prepare_preference(tokenizer, settings, source=name, kind=None, rows=rows)
    except DataError as exc:
        return None, ("data.source", str(exc))
    except Exception:  # noqa: BLE001 - a chat template that fails outside transformers: the run will tell
        return None, None
    lengths = sorted(p.length(a) for p in data.train for a in p.answers)
    return TokenFacts(len(data.train), rows_read, *(percentile(lengths, q) for q in (50, 90, 95, 99)),
                      lengths[-1], f"{directory}/tokenizer.json", tuple(lengths)), None
