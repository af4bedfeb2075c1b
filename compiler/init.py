"""`ftc init`'s compiler side: read a dataset's first rows, guess its format (compiler/detect.py),
look at the model's chat template, and write a commented spec. No prompting and no file writing here
(cli/init.py does both); `ftc init` compiles what this renders before it saves it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ftc.compiler.catalog import find_gpu
from ftc.compiler.detect import Guess, detect
from ftc.compiler.facts import DataFacts, FactError, ModelFacts, data_facts, model_facts
from ftc.compiler.methods import METHODS
from ftc.core.data.encode import DataError
from ftc.core.data.load import load_rows

SAMPLE_ROWS = 200  # rows the guess looks at
DEFAULT_MODEL = "smollm2-135m-instruct"  # bundled: compiles and trains with no download


def _method_words(kind: str) -> str:
    """The method's own one-line description (its class docstring's first sentence)."""
    doc = " ".join((METHODS[kind].__doc__ or "").split()) if kind in METHODS else ""
    return doc.split(": ", 1)[-1].split(". ")[0].rstrip(".") if doc else "see docs/spec.md, [method]"


class InitError(Exception):
    """The data or a choice cannot make a spec; the message says why and how to fix it."""


@dataclass
class DataRead:
    """A dataset as `ftc init` saw it."""

    source: str
    facts: DataFacts
    rows: list[dict[str, Any]]
    """The first SAMPLE_ROWS rows."""
    columns: list[str]
    total: int
    """Rows in the source (its first file, for several files)."""


@dataclass
class Choices:
    """Everything the spec is written from: the guess, plus the model, method and hardware."""

    name: str
    data: DataRead
    guess: Guess
    model: str = DEFAULT_MODEL
    method: str = "lora"
    gpu: str | None = None
    vram_gb: float | None = None
    model_local: bool = True
    """The model's tokenizer is on this machine (bundled or a directory): max_length can be measured."""
    notes: list[str] = field(default_factory=list)
    """Lines about the model and method choice, printed and written as comments."""


def read_data(source: str, split: str = "train") -> DataRead:
    """The first rows and the columns of a local source, read by the data stage's own reader."""
    try:
        facts = data_facts(source)
    except FactError as exc:
        raise InitError(str(exc)) from None
    if facts.rows == 0:
        raise InitError(f"{source}: holds no rows")
    if facts.kind == "hub":
        raise InitError(f"{source!r} reads as a hub dataset id; ftc init reads local data: download it (e.g. "
                        "datasets' save_to_disk) or give a file")
    try:
        rows = load_rows(facts.files[0] if facts.kind == "files" else source,
                         facts.loader if facts.kind == "files" else "saved", split)
    except DataError as exc:
        raise InitError(str(exc)) from None
    if not rows:
        raise InitError(f"{source}: holds no rows")
    columns = list(dict.fromkeys(k for row in rows[:SAMPLE_ROWS] for k in row))
    return DataRead(source, facts, rows[:SAMPLE_ROWS], columns, facts.rows or len(rows))


def guess_format(data: DataRead, fmt: str | None = None, columns: dict[str, str] | None = None) -> Guess:
    """The detected format and mapping, with `--format` / `--column` choices applied over it."""
    try:
        guess = detect(data.rows, data.columns)
    except ValueError as exc:
        if fmt is None:
            raise InitError(f"{data.source}: {exc}") from None
        guess = Guess(fmt, kind="as given")
    if fmt is not None and fmt != guess.format:
        guess = Guess(fmt, kind="as given", reasons=[f"format {fmt}: given with --format"])
    for name, column in (columns or {}).items():
        if column not in data.columns and column.split(".")[0] not in data.columns:
            raise InitError(f"--column {name}={column}: {data.source} has no column {column!r}; columns: "
                            f"{', '.join(data.columns)}")
        guess.columns[name] = column
        guess.reasons.append(f"{name} = column {column!r} (given with --column)")
    return guess


def model_facts_for(model: str) -> ModelFacts:
    try:
        return model_facts(model)
    except FactError as exc:
        raise InitError(f"model {model!r}: {exc}") from None


def chat_template_note(facts: ModelFacts, fmt: str) -> str:
    """What happens with the model's chat template for this data (from the model's files, offline)."""
    model = facts.base
    if fmt == "text":
        return "text data is not formatted with a chat template: every token is trained as it is"
    if facts.chat_template is True:
        return (f"{model} has a chat template: each example is rendered with it, the prompt masked and the "
                "answer (with its end-of-turn token) trained")
    if facts.chat_template is False:
        return (f"{model}'s tokenizer has no chat template: the run adds ChatML and saves it with the model; a "
                "base model learns that format from your data (for prompt/answer data, data.template gives a "
                "plain prompt format instead)")
    return (f"{model}: its chat template is not known offline (not in the local cache); the run reads it when it "
            "downloads the model, and adds ChatML if there is none")


def safe_name(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100]
    return name if name and name[0].isalnum() else f"spec-{name}".rstrip("-")


def _s(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; ASCII-only keeps control characters out)."""
    return json.dumps(value, ensure_ascii=True)


def _c(text: str) -> str:
    """One comment line: whitespace runs (newlines included) become a space, other control characters go."""
    return "".join(ch for ch in " ".join(text.split()) if ch.isprintable())


def _hardware(choices: Choices) -> list[str]:
    if choices.gpu is None and choices.vram_gb is None:
        return ["[hardware]", 'device = "cpu"   # no --gpu given; for a GPU: gpu = "RTX 4090" (a catalog name) '
                "or vram_gb = 24"]
    lines = ["[hardware]"]
    if choices.gpu is not None:
        gpu = find_gpu(choices.gpu)
        what = f"{gpu.memory_gib:g} GiB usable" if gpu else "not in the catalog: ftc compile lists the known ones"
        lines.append(f"gpu = {_s(choices.gpu)}   # {_c(what)}")
    if choices.vram_gb is not None:
        lines.append(f"vram_gb = {choices.vram_gb:g}   # the memory budget per device, GiB")
    return lines


def _data_lines(choices: Choices) -> list[str]:
    data, guess = choices.data, choices.guess
    rows = data.total
    lines = ["[data]", f"source = {_s(data.source)}   # {rows} rows" + ("" if data.facts.kind == "files" else
                                                                      " (a saved dataset)"),
             f"format = {_s(guess.format)}   # " + _c(guess.kind or guess.format)]
    few = rows < 20
    lines.append(f"validation = {0 if few else 0.1}   # "
                 + ("too few rows to hold some out" if few else "a tenth held out for the validation loss"))
    lines.append('max_length = "auto"   # the longest example, measured with the model\'s tokenizer at compile time'
                 if choices.model_local and data.facts.kind == "files" else "max_length = 1024   # tokens; longer examples are truncated")
    if guess.columns:
        lines += ["", "[data.columns]   # format field = your column"]
        lines += [f"{f} = {_s(c)}" for f, c in guess.columns.items()]
    if guess.roles:
        lines += ["", "[data.roles]   # your role name = the role it plays"]
        lines += [f"{_s(r)} = {_s(p)}" for r, p in guess.roles.items()]
    return lines


def render_spec(choices: Choices, command: str) -> str:
    """The commented spec `ftc init` writes."""
    out = [f"# Written by `{_c(command)}`. Check the guesses below, then:",
           "#   ftc data SPEC   (examples as the model sees them)   ftc plan SPEC   (memory, decisions)   ftc run SPEC",
           "# Guessed from the data:"]
    out += [f"#   {_c(r)}" for r in choices.guess.reasons]
    out += [f"#   note: {_c(n)}" for n in (*choices.guess.warnings, *choices.notes)]
    out += [f"name = {_s(choices.name)}", "", "[model]",
            f"base = {_s(choices.model)}" + ("   # bundled with ftc; a hub id or a local model directory works too"
                                             if choices.model == DEFAULT_MODEL else ""), ""]
    out += _data_lines(choices)
    out += ["", "[method]", f"kind = {_s(choices.method)}   # "
            + _c(_method_words(choices.method)), "", "[train]"]
    if choices.guess.objective:
        out.append(f"objective = {_s(choices.guess.objective)}   # preference pairs: the chosen answer made more "
                   "likely than the rejected one")
    out += ["# epochs, batch_size, learning_rate, warmup: planned from the model, the method and the data when",
            "# left out (ftc plan SPEC shows each value and why); epochs = N or max_steps = N sets the length", ""]
    out += _hardware(choices)
    return "\n".join(out) + "\n"
