"""`learning_rate = "auto"` in the pipeline: the range test's curve, cached, turned into the plan's rate.

compile_spec plans the spec once with the rule's rate (compiler/plan/hyper.py), then asks here for the measured
one. The curve is kept in the data cache (FTC_CACHE/data/lr/KEY.json) under a key of everything that decides
it: the model (its config and files), the method's settings, the data (the same description as the token
measurement: files, tokenizer, data settings, seed), the plan's precision, batch, micro-batch, sequence length
and device, the sweep itself and the library versions. So a second compile reads it instead of training again.
The run itself is handed in by the caller (`range_test`, ftc.cli.lrfind.run_range_test): the compiler does not
start training scripts on its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from ftc.compiler.lrrange import Curve, RangeTestError, Sweep, pick, summary
from ftc.core.errors import Problem, SpecError

if TYPE_CHECKING:
    from ftc.compiler.checks import Facts
    from ftc.compiler.load import SpecSource
    from ftc.compiler.overrides import Override
    from ftc.compiler.plan import Plan

RANGE_VERSION = "1"
"""Raised whenever the test's run changes what it measures (ftc.runtime.lrrange, ftc.cli.lrfind)."""

RangeTest = Callable[[str, tuple["Override", ...], float, int, int, Sweep], Curve]
"""(spec path, overrides, planned rate, batch, micro-batch, sweep) -> the measured curve."""


def _refusal(source: SpecSource, facts: Facts) -> str | None:
    spec = source.spec
    if spec.train.objective != "sft":
        return (f"is measured for train.objective = \"sft\" only (got {spec.train.objective!r}: a preference loss "
                "has another scale); set a float learning_rate (the demo's DPO uses 2e-3 for LoRA)")
    if spec.hardware.world > 1:
        return (f"is measured in one process, and this plan has {spec.hardware.world}; measure it with "
                "--set hardware.devices=1 --set hardware.nodes=1, then set the rate it gives as a float")
    if facts.data is None or facts.data.kind != "files" or any(m.kind != "files" for m in facts.mix):
        return ("needs the training data as local files (the range test trains on their first batches); hub "
                "datasets are read only when the run starts: set a float learning_rate, or save the data to a file")
    return None


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def cache_key(source: SpecSource, facts: Facts, plan: Plan, sweep: Sweep) -> str | None:
    """The key of the curve in the cache; None when the model or the data is not on this machine."""
    from ftc.compiler.tokens import data_description, tokenizer_dir
    from ftc.core.data.cache import hashes_file
    from ftc.core.data.files import fingerprint

    spec = source.spec
    assert facts.model is not None and facts.data is not None
    described_data = data_description(spec, facts.model, facts.data, facts.mix)
    folder = tokenizer_dir(spec.model.base, facts.model.origin, spec.model.revision)
    if described_data is None or folder is None:
        return None
    described = {"version": RANGE_VERSION, "sweep": dataclasses.asdict(sweep), "data": described_data,
                 "model": [spec.model.model_dump(mode="json"), facts.model.config,
                           fingerprint([str(folder)], hashes_file())],
                 "method": spec.method.model_dump(mode="json"),
                 "plan": [plan[k] for k in ("precision", "load_dtype", "batch_size", "micro_batch_size", "max_length",
                                            "device", "gradient_checkpointing", "optimizer", "padding_free")],
                 "train": [spec.train.seed, spec.train.weight_decay, spec.train.max_grad_norm],
                 "libraries": [_package(n) for n in ("torch", "transformers", "peft", "trl")]}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read(key: str) -> Curve | None:
    from ftc.core.data.cache import data_cache

    try:
        kept = json.loads((data_cache() / "lr" / f"{key}.json").read_text(encoding="utf-8"))
        return Curve(tuple((float(a), float(b)) for a, b in kept["points"]), str(kept["stopped"]),
                     float(kept["seconds"]), int(kept["planned_steps"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write(key: str, curve: Curve) -> None:
    from ftc.core.data.cache import data_cache

    path = data_cache() / "lr" / f"{key}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(dataclasses.asdict(curve)), encoding="utf-8")
        os.replace(partial, path)
    except OSError:  # a read-only cache: measured again next time
        pass


def measured_plan(source: SpecSource, facts: Facts, plan: Plan, overrides: tuple[Override, ...],
                  range_test: RangeTest | None, build: Callable[..., Plan]) -> Plan:
    """`plan` (built with the rule's rate) rebuilt with the range test's rate, the curve in its notes;
    SpecError at train.learning_rate when the test cannot run or its curve cannot be read."""
    def refuse(message: str) -> SpecError:
        return SpecError([Problem(*source.where("train.learning_rate"), "train.learning_rate",
                                  f"\"auto\"{'' if message.startswith(':') else ' '}{message}")])

    if refusal := _refusal(source, facts):
        raise refuse(refusal)
    planned = float(plan["learning_rate"])
    sweep = Sweep.around(planned)
    key = cache_key(source, facts, plan, sweep)
    if key is None:
        raise refuse(f"needs the model {source.spec.model.base!r} and its tokenizer on this machine (the range "
                     "test trains it); download it first (ftc run fetches hub models), or set a float learning_rate")
    curve = _read(key)
    if curve is None:
        if range_test is None:
            raise refuse("is measured by a learning-rate range test on this machine, which `ftc compile`, `ftc plan` "
                         "and `ftc run` run and cache; this plan has no measured curve (another machine's plan, or "
                         "a caller that does not run the test): run `ftc compile` on it, or set a float learning_rate")
        try:
            curve = range_test(str(source.path), overrides, planned, int(plan["batch_size"]),
                               int(plan["micro_batch_size"]), sweep)
        except RangeTestError as exc:
            raise refuse(f": {exc}") from None
        _write(key, curve)
    try:
        chosen = pick(curve, planned)
    except RangeTestError as exc:
        raise refuse(f": {exc}") from None
    rebuilt = build(source.spec, facts, source.name, measured_lr=(chosen.value, chosen.why))
    return dataclasses.replace(rebuilt, notes=(*rebuilt.notes, summary(curve)))
