"""Resolve every setting of a run: spec values as given, the rest chosen with a reason.

Until the memory estimator lands, "auto" choices use simple, stated rules (see each reason);
the plan's shape (settings with provenance, reasons) is what plan.json and train.py consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.catalog import find_gpu
from ftc.compiler.checks import Facts
from ftc.compiler.literal import lit
from ftc.compiler.spec import FORMAT_FIELDS, Spec


@dataclass(frozen=True)
class Setting:
    """A resolved value and where it came from (the comment beside it in train.py)."""

    value: Any
    why: str


@dataclass(frozen=True)
class Plan:
    """Every value the emitted script needs, resolved, with provenance and reasons."""

    name: str
    method: str
    template: str
    settings: dict[str, Setting]
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        return self.settings[key].value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "settings": {k: s.value for k, s in self.settings.items()},
            "provenance": {k: s.why for k, s in self.settings.items()},
            "reasons": self.reasons,
            "notes": self.notes,
        }


def _given(spec_value: Any, key: str, default: Any, default_why: str = "default") -> Setting:
    return Setting(spec_value, f"spec: {key}") if spec_value is not None else Setting(default, default_why)


def _precision(spec: Spec) -> tuple[str, str]:
    hw = spec.hardware
    if hw.precision != "auto":
        return hw.precision, "spec: hardware.precision"
    if hw.device == "cpu":
        return "fp32", "planned: cpu trains in fp32; bf16 on CPU is slow and fp16 unsupported"
    gpu = find_gpu(hw.gpu) if hw.gpu else None
    if gpu is not None:
        if gpu.bf16:
            return "bf16", f"planned: the {gpu.name} computes in bf16 (range of fp32, no loss scaling)"
        return "fp16", f"planned: the {gpu.name} has no bf16; fp16 with loss scaling"
    return "bf16", "planned: bf16, assuming an Ampere or newer GPU; set precision = \"fp16\" for T4/V100"


def _micro_batch(spec: Spec, per_device: int) -> tuple[int, str]:
    t = spec.train
    if isinstance(t.micro_batch_size, int):
        return t.micro_batch_size, "spec: train.micro_batch_size"
    cap = 8 if spec.hardware.device == "cpu" else 4
    micro = max(d for d in range(1, min(cap, per_device) + 1) if per_device % d == 0)
    return micro, (f"planned: largest divisor of {per_device} not above {cap} (interim rule until "
                   "the memory estimator lands)")


def _checkpointing(spec: Spec, params: int | None) -> tuple[bool, str]:
    value = spec.train.gradient_checkpointing
    if value != "auto":
        return bool(value), "spec: train.gradient_checkpointing"
    if spec.hardware.device == "cpu":
        return False, "planned: off on cpu, where memory is rarely the limit and recomputing costs ~30 %"
    if params is None or params >= 1_000_000_000:
        return True, "planned: on for models of 1B parameters or more (or of unknown size) to save activations"
    return False, "planned: off for a model under 1B parameters (faster)"


def _steps(spec: Spec, facts: Facts) -> tuple[int | None, int | None]:
    """(training rows, optimizer steps per epoch), when the row count is known."""
    rows = facts.data.rows if facts.data else None
    if rows is None:
        return None, None
    validation = spec.data.validation
    if isinstance(validation, float) and validation > 0:
        rows -= math.ceil(rows * validation)  # datasets.train_test_split rounds the test share up
    return rows, max(1, math.ceil(rows / spec.train.batch_size))


def build_plan(spec: Spec, facts: Facts, name: str) -> Plan:
    """The fully resolved plan for a checked spec."""
    method = spec.method
    t, hw, d = spec.train, spec.hardware, spec.data
    s: dict[str, Setting] = {}
    reasons: list[str] = []
    notes: list[str] = []
    model = facts.model
    assert model is not None and facts.data is not None  # run_checks raised otherwise

    # model
    s["base_model"] = Setting(spec.model.base, f"spec: model.base ({model.origin})")
    s["revision"] = _given(spec.model.revision, "model.revision", None)
    s["trust_remote_code"] = Setting(spec.model.trust_remote_code, "spec: model.trust_remote_code"
                                     if "trust_remote_code" in spec.model.model_fields_set else "default: off")
    params = model.params
    if params is not None:
        reasons.append(f"model: {params / 1e6:,.0f}M parameters (from {model.facts_from})")
    else:
        notes.append(f"model facts for {lit(spec.model.base)} are not available offline; they are read when "
                     "the run downloads the model")
    if model.chat_template is False and d.format != "text":
        notes.append("the tokenizer has no chat template: the run adds a ChatML template and saves it "
                     "with the model")

    # data
    s["data_source"] = Setting(d.source, "spec: data.source")
    s["data_kind"] = Setting(facts.data.kind, "derived: from the source")
    s["data_loader"] = Setting(facts.data.loader, "derived: file type")
    data_files = d.source
    if facts.data.kind == "files" and facts.data.files and Path(d.source).expanduser().is_dir():
        data_files = f"{d.source.rstrip('/')}/*{Path(facts.data.files[0]).suffix}"
    s["data_files"] = Setting(data_files, "derived: data.source" if data_files == d.source
                              else "derived: every file of data.source")
    s["data_format"] = Setting(d.format, "spec: data.format")
    s["columns"] = Setting({f: d.columns.get(f, f) for f in FORMAT_FIELDS[d.format]}, "spec: data.columns")
    if facts.data.columns is not None:
        present = [f for f in FORMAT_FIELDS[d.format] if d.columns.get(f, f) in facts.data.columns]
        s["optional_fields"] = Setting(present, "derived: columns present in the data")
    else:
        s["optional_fields"] = Setting([f for f in FORMAT_FIELDS[d.format] if f in d.columns],
                                       "derived: the fields mapped in data.columns (columns unknown offline)")
        if d.format == "instruction":
            notes.append("the dataset's columns are unknown offline: `input` and `system` are used only if "
                         "mapped in [data.columns]")
    s["data_split"] = Setting(d.split, "spec: data.split" if d.split != "train" else "default")
    s["validation"] = Setting(d.validation, "spec: data.validation")
    if isinstance(d.validation, str):
        s["validation_loader"] = Setting(facts.validation.loader if facts.validation else None,
                                         "derived: file type")
    s["max_length"] = Setting(d.max_length, "spec: data.max_length")
    train_rows, steps_per_epoch = _steps(spec, facts)
    if train_rows is not None:
        reasons.append(f"data: {facts.data.rows} rows, about {train_rows} for training")

    # method
    s["method"] = Setting(method.kind, "spec: method.kind")
    s["quantization"] = Setting(method.quantization, "derived: method.kind")
    for key in ("r", "alpha", "dropout", "target_modules", "double_quant", "int8_threshold"):
        if hasattr(method, key):
            s[key] = Setting(getattr(method, key), f"spec: method.{key}"
                             if key in method.model_fields_set else "default")

    # hardware and precision
    s["device"] = Setting(hw.device, "spec: hardware.device")
    s["gpus"] = Setting(hw.gpus, "spec: hardware.gpus")
    precision, why = _precision(spec)
    s["precision"] = Setting(precision, why)
    s["load_dtype"] = Setting({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision],
                              "derived: precision")
    if method.kind == "full" and precision == "fp16":
        s["load_dtype"] = Setting("float32", "derived: fp16 mixed precision keeps fp32 master weights")
    elif method.kind == "full" and precision == "bf16":
        s["load_dtype"] = Setting("bfloat16", "derived: pure bf16 weights and AdamW states (half the memory "
                                  "of mixed precision)")
    gpu = find_gpu(hw.gpu) if hw.gpu else None
    budget = hw.vram_gb if hw.vram_gb is not None else (gpu.memory_gib if gpu else None)
    s["budget_gib"] = Setting(budget, "spec: hardware.vram_gb" if hw.vram_gb else "derived: hardware.gpu"
                              if gpu else "default: no budget")

    # optimisation
    s["learning_rate"] = _given(t.learning_rate, "train.learning_rate", method.default_learning_rate,
                                f"default: for {method.kind}")
    if t.max_steps is not None:
        s["epochs"] = Setting(None, "spec: train.max_steps overrides epochs")
        s["max_steps"] = Setting(t.max_steps, "spec: train.max_steps")
        total_steps: int | None = t.max_steps
    else:
        s["epochs"] = _given(t.epochs, "train.epochs", 3.0)
        s["max_steps"] = Setting(-1, "derived: train by epochs")
        total_steps = math.ceil(steps_per_epoch * s["epochs"].value) if steps_per_epoch else None
    s["batch_size"] = Setting(t.batch_size, "spec: train.batch_size" if "batch_size" in t.model_fields_set
                              else "default")
    per_device = t.batch_size // hw.gpus
    micro, why = _micro_batch(spec, per_device)
    s["micro_batch_size"] = Setting(micro, why)
    s["grad_accum"] = Setting(per_device // micro,
                              f"derived: {t.batch_size} = {micro} x {per_device // micro} x {hw.gpus} device(s)")
    checkpointing, why = _checkpointing(spec, params)
    s["gradient_checkpointing"] = Setting(checkpointing, why)
    s["optimizer"] = Setting("adamw_torch_fused" if hw.device == "cuda" else "adamw_torch",
                             "planned: fused AdamW on cuda (no foreach temporaries)" if hw.device == "cuda"
                             else "planned: AdamW (fused kernels are for cuda)")
    s["scheduler"] = _given(t.scheduler, "train.scheduler", "cosine")
    s["warmup"] = _given(t.warmup, "train.warmup", 0.05)
    s["weight_decay"] = _given(t.weight_decay, "train.weight_decay", 0.0)
    s["max_grad_norm"] = _given(t.max_grad_norm, "train.max_grad_norm", 1.0)
    s["seed"] = _given(t.seed, "train.seed", 42)
    for key in ("scheduler", "warmup", "weight_decay", "max_grad_norm", "seed"):
        if key not in t.model_fields_set:
            s[key] = Setting(s[key].value, "default")
    s["total_steps"] = Setting(total_steps, "derived: rows / batch_size x epochs" if total_steps else
                               "derived: unknown until the data is read")
    if total_steps:
        reasons.append(f"steps: {total_steps} optimizer steps of {t.batch_size} examples")
    if t.logging_steps != "auto":
        s["logging_steps"] = Setting(t.logging_steps, "spec: train.logging_steps")
    else:
        every = max(1, min(50, (total_steps or 500) // 40))
        s["logging_steps"] = Setting(every, "planned: about 40 step events per run")
    has_validation = d.validation != 0
    if spec.eval.steps != "auto":
        s["eval_steps"] = Setting(spec.eval.steps, "spec: eval.steps")
    else:
        s["eval_steps"] = Setting(max(1, (total_steps or 500) // 5) if has_validation else None,
                                  "planned: validation loss about 5 times per run" if has_validation
                                  else "derived: no validation data")
    s["save_steps"] = Setting(max(1, (total_steps or 500) // 5), "planned: a checkpoint about 5 times per run")
    s["save_total_limit"] = Setting(2, "default: keep the last 2 checkpoints")
    s["compare"] = Setting(spec.eval.compare, "spec: eval.compare" if spec.eval.compare else "default: off")
    s["max_new_tokens"] = Setting(spec.eval.max_new_tokens, "spec: eval.max_new_tokens"
                                  if "max_new_tokens" in spec.eval.model_fields_set else "default")

    reasons.append(f"precision: {precision} ({s['precision'].why.split(': ', 1)[1]})")
    reasons.append(f"batch: {micro} per step x {per_device // micro} accumulated x {hw.gpus} device(s) "
                   f"= {t.batch_size}")
    reasons.append(f"gradient checkpointing: {'on' if checkpointing else 'off'} "
                   f"({s['gradient_checkpointing'].why.split(': ', 1)[1]})")
    return Plan(name=name, method=method.kind, template=method.template, settings=s, reasons=reasons, notes=notes)
