"""Second-stage validation: the spec against the model, the data and the hardware.

Each `@check` function yields `(key, message)` pairs; `run_checks` runs them all, locates each
key in the spec file and returns every problem at once, with the facts the later stages need.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from ftc.compiler.adapter import AdapterFacts, adapter_facts
from ftc.compiler.catalog import GPUS, find_gpu
from ftc.compiler.evalchecks import eval_findings
from ftc.core.errors import Problem, SpecError
from ftc.compiler.facts import DataFacts, FactError, ModelFacts, data_facts, model_facts
from ftc.compiler.host import HostFacts, host_facts
from ftc.compiler.limits import SHOWN_PROBLEMS
from ftc.compiler.load import SpecSource
from ftc.compiler.tokens import TokenFacts, measure_data
from ftc.compiler.objectives import objective_findings
from ftc.compiler.spec import FORMAT_FIELDS, REQUIRED_FIELDS, TEMPLATE_FIELDS, TURN_FIELDS, Spec
from ftc.core.data.mapping import CONTENT_KEYS, DEFAULT_ROLES, ROLE_KEYS


@dataclass(frozen=True)
class Facts:
    """Everything the planner knows besides the spec."""

    model: ModelFacts | None
    data: DataFacts | None
    validation: DataFacts | None
    mix: tuple[DataFacts, ...] = ()
    """The `[[data.mix]]` sources, in spec order."""
    tokens: TokenFacts | None = None
    """Token lengths of the data's first rows, measured with the model's tokenizer (None: not on this machine)."""
    adapter: AdapterFacts | None = None
    """The adapter `model.adapter` continues (compiler/adapter.py)."""
    host: HostFacts = HostFacts()
    """The compiling machine's CPU flags (compiler/host.py); the default knows none."""


Finding = tuple[str, str]
Check = Callable[[Spec, Facts], Iterator[Finding]]
CHECKS: list[Check] = []
T = TypeVar("T")


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def _columns_problems(spec: Spec, facts: DataFacts, key: str) -> Iterator[Finding]:
    if facts.columns is None:
        return
    found = ", ".join(facts.columns) or "(none)"
    fmt = spec.data.format
    for field in FORMAT_FIELDS[fmt]:
        if field in TURN_FIELDS:
            continue
        column = spec.data.columns.get(field, field)
        if column in facts.columns or column.split(".")[0] in facts.columns:  # dotted: a nested field
            continue
        if field in REQUIRED_FIELDS[fmt] or field in spec.data.columns:
            close = difflib.get_close_matches(column, list(facts.columns), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            how = f"set data.columns.{field} to one of them" if field not in spec.data.columns else "fix the mapping"
            where = f"data.columns.{field}" if field in spec.data.columns else key
            yield where, (f"the {fmt} format needs a {field!r} field, but {facts.source} has no column "
                          f"{column!r}; columns found: {found}; {hint}{how}")


@check
def data_columns(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """Mapped format fields exist in the format, and their columns exist in the data."""
    fmt = spec.data.format
    for field in spec.data.columns:
        if field not in FORMAT_FIELDS[fmt]:
            close = difflib.get_close_matches(field, FORMAT_FIELDS[fmt], n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"its fields are: {', '.join(FORMAT_FIELDS[fmt])}"
            yield f"data.columns.{field}", f"not a field of the {fmt} format; {hint}"
    for key, source in (("data.source", facts.data), ("data.validation", facts.validation),
                        *(("data.mix", mixed) for mixed in facts.mix)):
        if source is not None:
            yield from _columns_problems(spec, source, key)


def _nested(row: dict[str, object], column: str) -> object:
    value: object = row.get(column) if column in row else row
    if column not in row:
        for part in column.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    return value


@check
def data_rows_fit_the_format(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """The first row's fields have the types the format needs, and chat roles can be mapped."""
    d = spec.data
    sample = facts.data.sample if facts.data else None
    if not sample:
        return
    where = f"{d.source}, row 1"
    if d.format == "chat":
        column = d.columns.get("messages", "messages")
        turns = _nested(sample, column)
        key = "data.columns.messages" if "messages" in d.columns else "data.format"
        if column.split(".")[0] not in sample:
            return  # reported by data_columns
        if isinstance(turns, str):  # a CSV cell: the data stage parses conversations stored as JSON text
            try:
                turns = json.loads(turns)
            except json.JSONDecodeError:
                pass
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            yield key, (f"{where}: column {column!r} must hold a list of turns (objects with a role and a content), "
                        f"got {type(turns).__name__}; columns found: {', '.join(sample)}")
            return
        role_key, content_key = d.columns.get("role"), d.columns.get("content")
        roles = set(DEFAULT_ROLES) | set(d.roles)  # the names the data stage maps without [data.roles]
        for number, turn in enumerate(turns, start=1):
            rk = role_key or next((k for k in ROLE_KEYS if k in turn), None)
            ck = content_key or next((k for k in CONTENT_KEYS if k in turn), None)
            if rk is None or rk not in turn or ck is None or ck not in turn:
                yield ("data.columns", f"{where}, turn {number}: no role or content key (keys found: "
                       f"{', '.join(turn)}); set data.columns.role and data.columns.content")
                return
            role = turn[rk]
            if not isinstance(role, str) or (role not in roles and role.lower() not in roles):
                yield ("data.roles", f"{where}, turn {number}: role {role!r} cannot be mapped to "
                       f"system/user/assistant; add it to [data.roles], e.g. {json.dumps(str(role))} = \"user\"")
                return
    else:
        for field in REQUIRED_FIELDS[d.format]:
            column = d.columns.get(field, field)
            value = _nested(sample, column)
            if value is not None and not isinstance(value, (str, int, float)):
                yield (f"data.columns.{field}" if field in d.columns else "data.source",
                       f"{where}: column {column!r} ({field}) holds a {type(value).__name__}, not text; map "
                       f"{field} to a text column (columns found: {', '.join(sample)})")


@check
def validation_is_other_data(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A validation source shares no file with the training data (it would measure memorised rows)."""
    if facts.validation is None or facts.data is None:
        return
    train = {os.path.realpath(f) for f in facts.data.files}
    shared = sorted(f for f in facts.validation.files if os.path.realpath(f) in train)
    if shared:
        yield "data.validation", (f"{', '.join(shared[:3])} is training data too (data.source = {spec.data.source!r}); "
                                  "validation must be held-out rows: point it at other rows, or set a share such as "
                                  "data.validation = 0.1")


@check
def data_options_fit_the_format(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """roles are for chat data, template for instruction/completion, and a template must parse."""
    d = spec.data
    if d.roles and d.format != "chat":
        yield "data.roles", f"maps conversation roles, but the {d.format} format has none; remove [data.roles]"
    if d.train_on != "answers" and d.format == "text":
        yield "data.train_on", "text data trains every token; remove train_on or use another format"
    if d.template is not None:
        if d.format not in TEMPLATE_FIELDS:
            yield "data.template", (f"a prompt template is for instruction or completion data, not {d.format}; "
                                    "remove it")
            return
        import jinja2
        from jinja2 import meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        try:
            parsed = ImmutableSandboxedEnvironment().parse(d.template)
        except jinja2.TemplateSyntaxError as exc:
            yield "data.template", f"not a valid Jinja template (line {exc.lineno}: {exc.message})"
            return
        unknown = sorted(meta.find_undeclared_variables(parsed) - set(TEMPLATE_FIELDS[d.format]))
        if unknown:
            yield "data.template", (f"uses {', '.join(unknown)}, which the {d.format} format does not have; "
                                    f"variables: {', '.join(TEMPLATE_FIELDS[d.format])}")
        if spec.eval.compare:
            yield "eval.compare", ("before/after answers use the chat template, but data.template replaces it; "
                                   "set compare = 0")
    if d.max_length == "auto" and facts.tokens is None and facts.model is not None and facts.data is not None:
        yield "data.max_length", ("\"auto\" measures the data with the model's tokenizer, but no tokenizer.json of "
                                  f"{spec.model.base!r} is on this machine (or no row could be measured); set a "
                                  "number of tokens")
    if d.padding_free and d.packing:
        yield "data.padding_free", "packing is already padding-free; remove padding_free"
    if (d.padding_free or d.packing) and spec.method.trainer == "hf":
        key = "data.packing" if d.packing else "data.padding_free"
        yield key, (f"kind = {spec.method.kind!r} adds virtual tokens or adaption prompts, which a row without "
                    "padding cannot hold (it trains with transformers' Trainer, which has no packing); turn it off")
    c = d.clean
    if c.max_tokens is not None and c.max_tokens < c.min_tokens:
        yield "data.clean.max_tokens", f"is below min_tokens ({c.max_tokens} < {c.min_tokens}); no row could pass"


@check
def max_length_fits_the_context(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A row longer than the model's context has positions it was never trained on (or cannot embed)."""
    config = facts.model.config if facts.model else None
    context = config.get("max_position_embeddings") if config else None
    length = spec.data.max_length if "max_length" in spec.data.model_fields_set else None  # a default is capped
    if isinstance(length, int) and isinstance(context, int) and not isinstance(context, bool) and length > context:
        yield "data.max_length", (f"{length} is above the model's context of {context} tokens "
                                  f"(max_position_embeddings); set max_length to at most {context}, or \"auto\"")


@check
def data_not_empty(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A data source with no rows cannot train."""
    if facts.data is not None and facts.data.rows == 0:
        yield "data.source", f"{spec.data.source} holds no rows; add examples or fix the path"


@check
def validation_leaves_training_rows(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A held-out share that takes every row (e.g. 0.1 of a 1-row file) leaves nothing to train on."""
    share, rows = spec.data.validation, facts.data.rows if facts.data else None
    if isinstance(share, float) and share > 0 and rows:
        held = math.ceil(rows * share)
        if held >= rows:
            yield "data.validation", (f"holds out {held} of the {rows} row(s) of {spec.data.source} (validation = "
                                      f"{share}: rounded up), leaving none to train on; add rows, or set "
                                      "validation = 0 or a second source")


@check
def keys_the_source_ignores(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """data.split is read only from hub or saved datasets, model.revision only for hub models."""
    if "split" in spec.data.model_fields_set and facts.data is not None and facts.data.kind == "files":
        yield "data.split", (f"names a split of a hub or saved dataset, but data.source ({spec.data.source}) is "
                             "data files, which have one split, so it would be ignored; remove split")
    if spec.model.revision is not None and facts.model is not None and facts.model.origin != "hub":
        yield "model.revision", (f"picks a hub revision, but model.base ({spec.model.base}) is a {facts.model.origin} "
                                 "model, so it would be ignored; remove revision")


@check
def compare_needs_answers(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """Before/after generation compares answers, which `text` data has not."""
    if spec.eval.compare and spec.data.format == "text":
        yield "eval.compare", "the text format has no answers to compare; set compare = 0 or use another format"
    if spec.eval.steps != "auto" and spec.data.validation == 0:
        yield "eval.steps", "sets a validation cadence, but data.validation = 0; hold some rows out or remove it"
    if spec.eval.compare and spec.data.validation == 0:
        yield "eval.compare", "compares on validation examples, but data.validation = 0; hold some out"


@check
def metrics_and_trackers(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """Metrics have answers and data to measure, and their packages; trackers their packages."""
    yield from eval_findings(spec)


@check
def objective_fits(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A preference objective has preference data and a method and run TRL's preference trainers can train."""
    yield from objective_findings(spec)


@check
def hardware_budget(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A CUDA run states its budget; a named GPU is known; the precision runs on the device."""
    hw = spec.hardware
    gpu = find_gpu(hw.gpu) if hw.gpu else None
    if hw.gpu and gpu is None:
        names = [g.name for g in GPUS]
        close = difflib.get_close_matches(hw.gpu, names, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}?" if close else "set vram_gb instead"
        yield "hardware.gpu", f"unknown GPU (got {hw.gpu!r}); known: {', '.join(names)}; {hint}"
    if hw.device == "cuda" and hw.gpu is None and hw.vram_gb is None:
        yield "hardware", "a cuda run needs a memory budget: set vram_gb = <GB per GPU> or gpu = \"<name>\""
    if hw.device == "cpu" and hw.gpu:
        yield "hardware.gpu", "names a GPU but device = \"cpu\"; remove gpu or set device = \"cuda\""
    if hw.device == "cpu" and hw.precision == "fp16":
        yield "hardware.precision", "fp16 training needs a GPU; use fp32 (or bf16) on cpu"
    if gpu is not None and not gpu.bf16 and hw.precision == "bf16":
        yield "hardware.precision", f"the {gpu.name} has no bf16 support; use fp16 or auto"
    if hw.attention == "flash_attention_2":
        if hw.device == "cpu":
            yield "hardware.attention", "flash_attention_2 runs on CUDA only; use sdpa or auto on cpu"
        elif hw.precision == "fp32":
            yield "hardware.attention", "flash_attention_2 computes in bf16 or fp16 only; set precision to one, or auto"
        elif gpu is not None and not gpu.bf16:
            yield "hardware.attention", (f"flash_attention_2 needs an Ampere or newer GPU; the {gpu.name} is older: "
                                         "use sdpa")
    if hw.liger is True and hw.device == "cpu":
        yield "hardware.liger", "Liger's kernels are Triton kernels for CUDA; set liger = false (or auto) on cpu"
    if hw.liger is True and spec.train.objective != "sft":
        yield "hardware.liger", (f"Liger's layer kernels are planned for SFT only; {spec.train.objective}'s trainer "
                                 "reads use_liger_kernel as its own Liger loss: set liger = false (or auto)")


@check
def batch_divides(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """micro-batch × accumulation × devices must equal the effective batch exactly."""
    t, world = spec.train, spec.hardware.world
    if "batch_size" not in t.model_fields_set:
        return  # the planner picks a multiple of devices x micro-batch (plan/hyper.py)
    if t.batch_size % world:
        yield "train.batch_size", (f"{t.batch_size} examples cannot be split evenly over {world} devices "
                                   f"(devices x nodes); use a multiple of {world}")
    elif isinstance(t.micro_batch_size, int) and (t.batch_size // world) % t.micro_batch_size:
        per_device = t.batch_size // world
        fits = [d for d in range(1, per_device + 1) if per_device % d == 0]
        yield "train.micro_batch_size", (f"{t.micro_batch_size} does not divide the {per_device} examples per "
                                         f"device and step (batch_size {t.batch_size} / {world} devices); "
                                         f"use one of {fits} or \"auto\"")


@check
def remote_code(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """A model that needs its own Python code only runs with explicit trust."""
    config = facts.model.config if facts.model else None
    if config and config.get("auto_map") and not spec.model.trust_remote_code:
        yield "model.trust_remote_code", ("the model ships its own Python code (auto_map in config.json); "
                                          "set trust_remote_code = true only if you trust its authors")


def _facts(spec: Spec) -> tuple[Facts, list[Finding]]:
    findings: list[Finding] = []

    def read(fact: Callable[[], T], key: str | None = None, prefix: str = "") -> T | None:
        try:
            return fact()
        except FactError as exc:
            findings.append((key or exc.key, f"{prefix}{exc}"))
            return None

    model = read(lambda: model_facts(spec.model.base, spec.model.revision))
    data = read(lambda: data_facts(spec.data.source))
    validation = None
    if isinstance(spec.data.validation, str):
        validation = read(lambda: data_facts(str(spec.data.validation)), "data.validation")
        if validation is not None and validation.kind != "files":
            findings.append(("data.validation", "a second validation source must be data files "
                             f"(.jsonl/.json/.csv/.parquet or a glob; got a {validation.kind} dataset)"))
    mix = []
    for number, entry in enumerate(spec.data.mix, start=1):
        mixed = read(lambda: data_facts(entry.source), "data.mix", f"source {number} ({entry.source}): ")
        if mixed is not None:
            mix.append(mixed)
    adapter = read(lambda: adapter_facts(str(spec.model.adapter))) if spec.model.adapter else None
    tokens = None
    if model is not None and data is not None:
        tokens, problem = measure_data(spec, model, data, tuple(mix))
        if problem:  # the data stage itself, run on the first rows with the model's tokenizer
            findings.append(problem)
    return Facts(model, data, validation, tuple(mix), tokens, adapter, host_facts()), findings


def run_checks(source: SpecSource) -> Facts:
    """Read the facts and run every check; raises one SpecError listing all problems."""
    facts, findings = _facts(source.spec)
    for fn in CHECKS:
        findings.extend(fn(source.spec, facts))
    if findings:
        problems = [Problem(*source.where(key), key, message) for key, message in findings]
        problems.sort(key=lambda p: (p.line or 0, p.key))
        raise SpecError(problems[:SHOWN_PROBLEMS], more=max(0, len(problems) - SHOWN_PROBLEMS))
    return facts


@check
def method_checks(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """The method's own checks (compiler/methods): targets and layer counts against the
    architecture, combinations that break or do not learn."""
    yield from spec.method.checks(spec, facts)


from ftc.compiler import checks_adapter, checks_parallel  # noqa: E402,F401  (register the adapter, multi-device checks)
