"""Resolve every setting of a run: spec values as given, the rest chosen with a reason.

Micro-batch and checkpointing come from the memory estimate (compiler/estimate.py); the plan's
shape (settings with provenance, reasons) is what plan.json and train.py consume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftc.compiler.catalog import find_gpu
from ftc.compiler.checks import Facts
from ftc.core.errors import BudgetError
from ftc.compiler.estimate import Memory, RunShape, can_estimate, estimate_memory
from ftc.compiler.literal import lit
from ftc.compiler.methods import MethodPlan
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
    memory: Memory | None = None
    budget_bytes: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self.settings[key].value

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "settings": {k: s.value for k, s in self.settings.items()},
            "memory": self.memory.as_dict() if self.memory else None,
            "budget": self.budget_bytes,
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


# Keep the estimated peak this far under the budget: allocator fragmentation under variable
# sequence lengths adds 5-20 % of reserved over allocated memory (MEMORY.md, pitfall 10).
SAFETY_MARGIN = 0.10
# Relative step throughput of gradient checkpointing: one extra forward of every block
# (~4/3 of the compute; Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost").
CHECKPOINTING_SPEED = 0.75


@dataclass(frozen=True)
class BatchChoice:
    """The memory-relevant settings the planner picked, with the estimate that justified them."""

    micro: int
    checkpointing: bool
    optimizer: str
    memory: Memory | None
    why_micro: str
    why_checkpointing: str
    why_optimizer: str


def _throughput(device: str, tokens: int, checkpointing: bool) -> float:
    """Relative tokens/s of a micro-batch: small batches leave the device idle. Saturates around
    2k tokens per step on a GPU and ~128 on a CPU (measured: benchmarks/README.md)."""
    saturation = 2048 if device == "cuda" else 128
    return tokens / (tokens + saturation) * (CHECKPOINTING_SPEED if checkpointing else 1.0)


def shape_for(spec: Spec, config: dict[str, object], *, micro: int, checkpointing: bool, dtype: str,
              optimizer: str, grad_accum: int, seq_len: int | None = None,
              method: MethodPlan | None = None) -> RunShape:
    """The RunShape of the script this spec emits, for one candidate setting (`method`: another
    method resolved for the model, default the spec's)."""
    method = method or spec.method.resolve(config)
    return RunShape(
        config=config, method=method, micro_batch=micro, seq_len=seq_len or spec.data.max_length,
        gradient_checkpointing=checkpointing, dtype=dtype, optimizer=optimizer, device=spec.hardware.device,
        padded=micro > 1, grad_accum=grad_accum, loss="trl" if method.method.trainer == "sft" else "hf")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.2f} GiB"


def choose_batch(spec: Spec, config: dict[str, object] | None, dtype: str, budget_gib: float | None,
                 per_device: int, seq_len: int | None = None) -> BatchChoice:
    """The fastest micro-batch / checkpointing pair whose estimated peak fits the budget. `seq_len`:
    the longest padded row a step sees (default data.max_length; see `sequence_length`)."""
    t, device = spec.train, spec.hardware.device
    optimizer = "adamw_torch_fused" if device == "cuda" else "adamw_torch"
    micros = [d for d in range(per_device, 0, -1) if per_device % d == 0]
    if isinstance(t.micro_batch_size, int):
        micros = [t.micro_batch_size]
    flags = [False, True] if t.gradient_checkpointing == "auto" else [bool(t.gradient_checkpointing)]
    if not spec.method.checkpointing_ok:
        flags = [False]  # run_checks refused an explicit true
    forced = "spec: train.micro_batch_size" if isinstance(t.micro_batch_size, int) else None
    forced_gc = "spec: train.gradient_checkpointing" if t.gradient_checkpointing != "auto" else None
    if config is None:  # no facts to estimate from: the simplest safe rules
        cap = 8 if device == "cpu" else 4
        micro = micros[0] if forced else max(d for d in micros if d <= cap)
        gc = flags[0] if forced_gc else device == "cuda"
        return BatchChoice(micro, gc, optimizer, None,
                           forced or f"planned: largest divisor of {per_device} not above {cap} (model size "
                           "unknown offline, so no estimate)",
                           forced_gc or ("planned: the model size is unknown offline" if gc
                                         else "planned: cpu, where memory is rarely the limit"),
                           _why_optimizer(optimizer))
    limit = budget_gib * 2**30 * (1 - SAFETY_MARGIN) if budget_gib else None
    # 8-bit AdamW (bitsandbytes, CUDA only) quarters the optimizer states; used only when the fused
    # fp32 AdamW cannot fit, since it is slightly slower and quantizes the moments.
    optimizers = [optimizer] + (["adamw_bnb_8bit"] if device == "cuda" else [])
    for optimizer in optimizers:
        candidates = []
        for micro in micros:
            for gc in flags:
                shape = shape_for(spec, config, micro=micro, checkpointing=gc, dtype=dtype, optimizer=optimizer,
                                  grad_accum=per_device // micro, seq_len=seq_len)
                memory = estimate_memory(shape)
                tokens = micro * (seq_len or int(spec.data.max_length))
                candidates.append((_throughput(device, tokens, gc), micro, gc, memory))
        fitting = [c for c in candidates if limit is None or c[3].total <= limit]
        if fitting:
            break
    else:
        raise BudgetError(_no_fit_message(spec, config, dtype, budget_gib, candidates, forced or forced_gc))
    _, micro, gc, memory = max(fitting, key=lambda c: (c[0], -c[3].total))
    if limit:
        budget = f"under {_gib(limit)} ({budget_gib:g} GiB less {SAFETY_MARGIN:.0%} margin)"
        why_micro = forced or (f"planned: the fastest divisor of {per_device} whose estimated peak "
                               f"{_gib(memory.total)} stays {budget}")
    else:
        why_micro = forced or (f"planned: the fastest divisor of {per_device} (estimated peak {_gib(memory.total)}; "
                               "no budget set)")
    if forced_gc:
        why_gc = forced_gc
    elif gc:
        why_gc = "planned: without it no micro-batch fits the budget" if not any(
            not c[2] for c in fitting) else "planned: a larger micro-batch fits with it (faster overall)"
    else:
        why_gc = "planned: the run fits without it (faster)"
    return BatchChoice(micro, gc, optimizer, memory, why_micro, why_gc, _why_optimizer(optimizer))


def _why_optimizer(optimizer: str) -> str:
    if "8bit" in optimizer:
        return "planned: 8-bit AdamW (bitsandbytes), since fp32 AdamW states do not fit"
    if optimizer.endswith("fused"):
        return "planned: fused AdamW on cuda (no foreach temporaries)"
    return "planned: AdamW (fused kernels are for cuda)"


def _no_fit_message(spec: Spec, config: dict[str, object], dtype: str, budget_gib: float | None,
                    candidates: list[tuple[float, int, bool, Memory]], forced: str | None) -> str:
    smallest = min(candidates, key=lambda c: c[3].total)
    _, micro, gc, memory = smallest
    limit = (budget_gib or 0) * 2**30 * (1 - SAFETY_MARGIN)
    lines = [f"the run does not fit: the smallest setting (micro-batch {micro}, gradient checkpointing "
             f"{'on' if gc else 'off'}) needs an estimated {_gib(memory.total)}, {_gib(memory.total - limit)} over "
             f"the budget of {budget_gib:g} GiB less a {SAFETY_MARGIN:.0%} margin ({_gib(limit)})",
             "  " + ", ".join(f"{k} {_gib(v)}" for k, v in memory.as_dict().items() if v and k != "total")]
    if forced:
        lines.append(f"  {forced.split(': ')[1]} is set in the spec; \"auto\" lets the planner search")
    options = []
    for lighter in spec.method.alternatives():
        shape = shape_for(spec, config, micro=1, checkpointing=True, dtype=dtype, optimizer="adamw_torch_fused",
                          grad_accum=1, method=lighter.resolve(config))
        total = estimate_memory(shape).total
        if total <= limit:
            options.append(f"method.kind = \"{lighter.kind}\" (estimated {_gib(total)})")  # type: ignore[attr-defined]
    length = spec.data.max_length
    while length > 64:
        length //= 2
        shape = shape_for(spec, config, micro=1, checkpointing=True, dtype=dtype, optimizer="adamw_torch_fused",
                          grad_accum=1, seq_len=length)
        total = estimate_memory(shape).total
        if total <= limit:
            options.append(f"data.max_length = {length} (estimated {_gib(total)})")
            break
    needed = memory.total / (1 - SAFETY_MARGIN) / 2**30
    options.append(f"a device with at least {needed:,.1f} GiB (hardware.vram_gb)")
    lines.append("  what would fit: " + "; or ".join(options))
    return "\n".join(lines)


def resolve_max_length(spec: Spec, facts: Facts) -> tuple[int, str]:
    """data.max_length, with "auto" resolved from the measured token lengths (checks ensured they exist)."""
    d, tokens = spec.data, facts.tokens
    if d.max_length != "auto":
        return int(d.max_length), "spec: data.max_length"
    assert tokens is not None
    value = max(16, -(-tokens.max // 8) * 8)
    config = facts.model.config if facts.model else None
    limit = config.get("max_position_embeddings") if config else None
    if isinstance(limit, int) and value > limit:
        return limit, (f"planned: the model's context ({limit} tokens); the longest of {tokens.examples} measured "
                       f"examples has {tokens.max}")
    return value, (f"planned: the longest of the {tokens.examples} examples measured at compile time has "
                   f"{tokens.max} tokens (rounded up to a multiple of 8)")


def sequence_length(spec: Spec, facts: Facts, max_length: int) -> tuple[int, str]:
    """The longest row a step pads to, for the memory estimate: max_length when packing (rows are
    filled) or when lengths are unknown, else the longest measured example if that is shorter."""
    tokens = facts.tokens
    if spec.data.packing or tokens is None or tokens.max >= max_length:
        why = ("packed rows are max_length long" if spec.data.packing else "token lengths not measured"
               if tokens is None else "examples reach max_length")
        return max_length, f"sequence length: estimated at {max_length} tokens per row ({why})"
    return tokens.max, (f"sequence length: estimated at {tokens.max} tokens per row, the longest of {tokens.examples} "
                        f"measured examples (p50 {tokens.p50}, p95 {tokens.p95}; max_length {max_length})")


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
    max_length, why_max_length = resolve_max_length(spec, facts)
    if d.max_length == "auto":  # the rest of the plan reads the resolved number
        spec = spec.model_copy(update={"data": d.model_copy(update={"max_length": max_length})})
        d = spec.data
    seq_len, why_seq_len = sequence_length(spec, facts, max_length)

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
    mix = []
    for entry, mixed in zip(d.mix, facts.mix):
        kind = mixed.loader if mixed.kind == "files" else mixed.kind
        files = entry.source
        if mixed.kind == "files" and mixed.files and Path(entry.source).expanduser().is_dir():
            files = f"{entry.source.rstrip('/')}/*{Path(mixed.files[0]).suffix}"
        mix.append({"source": files, "kind": kind, "weight": entry.weight})
    s["mix"] = Setting(mix, "spec: data.mix")
    s["data_format"] = Setting(d.format, "spec: data.format")
    columns = {f: d.columns.get(f, f) for f in FORMAT_FIELDS[d.format]
               if f in d.columns or not (d.format == "chat" and f != "messages")}  # chat: role/content auto-detected
    s["columns"] = Setting(columns, "spec: data.columns" if d.columns else "default: the format's field names")
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
    s["max_length"] = Setting(max_length, why_max_length)
    if facts.tokens is not None:
        lengths = facts.tokens
        reasons.append(f"tokens: {lengths.examples} examples measured with {Path(lengths.tokenizer).parent.name}'s "
                       f"tokenizer: p50 {lengths.p50}, p90 {lengths.p90}, p95 {lengths.p95}, p99 {lengths.p99}, "
                       f"max {lengths.max}")
    reasons.append(why_seq_len)
    s["roles"] = Setting(dict(d.roles), "spec: data.roles (added to human/gpt/user/assistant/system)")
    s["train_on"] = _given(d.train_on if "train_on" in d.model_fields_set else None, "data.train_on", "answers",
                           "default: every assistant turn")
    s["template"] = Setting(d.template, "spec: data.template")
    c = d.clean
    s["dedup"] = Setting(c.dedup, "spec: data.clean.dedup" if "dedup" in c.model_fields_set
                         else "default: exact duplicates are dropped")
    s["near_dedup"] = Setting(c.near_dedup, "spec: data.clean.near_dedup")
    s["min_tokens"] = Setting(c.min_tokens, "spec: data.clean.min_tokens")
    s["max_tokens"] = Setting(c.max_tokens, "spec: data.clean.max_tokens")
    s["untrained"] = Setting(c.untrained, "spec: data.clean.untrained" if "untrained" in c.model_fields_set
                             else "default: stop on examples with no trained token")
    s["packing"] = Setting(d.packing, "spec: data.packing" if "packing" in d.model_fields_set else "default: off")
    s["padding_free"] = Setting(d.padding_free, "spec: data.padding_free" if "padding_free" in d.model_fields_set
                                else "default: off")
    train_rows, steps_per_epoch = _steps(spec, facts)
    if train_rows is not None:
        reasons.append(f"data: {facts.data.rows} rows, about {train_rows} for training")

    # method
    s["method"] = Setting(method.kind, "spec: method.kind")
    s.update({key: Setting(knob.value, knob.why) for key, knob in method.resolve(model.config).settings.items()})

    # hardware and precision
    s["device"] = Setting(hw.device, "spec: hardware.device")
    s["gpus"] = Setting(hw.gpus, "spec: hardware.gpus")
    precision, why = _precision(spec)
    s["precision"] = Setting(precision, why)
    s["load_dtype"] = Setting({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision],
                              "derived: precision")
    if (own_dtype := method.load_dtype(precision)) is not None:
        s["load_dtype"] = Setting(*own_dtype)
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
    config = model.config if can_estimate(model.config) else None
    choice = choose_batch(spec, config, s["load_dtype"].value, budget, per_device, seq_len=seq_len)
    micro, checkpointing = choice.micro, choice.checkpointing
    s["micro_batch_size"] = Setting(micro, choice.why_micro)
    s["grad_accum"] = Setting(per_device // micro,
                              f"derived: {t.batch_size} = {micro} x {per_device // micro} x {hw.gpus} device(s)")
    s["gradient_checkpointing"] = Setting(checkpointing, choice.why_checkpointing)
    s["optimizer"] = Setting(choice.optimizer, choice.why_optimizer)
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
    if t.save_steps != "auto":
        s["save_steps"] = Setting(t.save_steps, "spec: train.save_steps")
    else:
        s["save_steps"] = Setting(max(1, (total_steps or 500) // 5), "planned: a checkpoint about 5 times per run")
    s["keep_checkpoints"] = Setting(t.keep_checkpoints, "spec: train.keep_checkpoints" if "keep_checkpoints"
                                    in t.model_fields_set else "default: the last 2 and the best by validation loss")
    s["on_nan"] = Setting(t.on_nan, "spec: train.on_nan" if "on_nan" in t.model_fields_set
                          else "default: skip NaN steps, then roll back with half the learning rate")
    s["nan_patience"] = _given(t.nan_patience if "nan_patience" in t.model_fields_set else None,
                               "train.nan_patience", t.nan_patience)
    s["early_stopping_patience"] = _given(t.early_stopping_patience, "train.early_stopping_patience", None,
                                          "default: off")
    s["compare"] = Setting(spec.eval.compare, "spec: eval.compare" if spec.eval.compare else "default: off")
    s["max_new_tokens"] = Setting(spec.eval.max_new_tokens, "spec: eval.max_new_tokens"
                                  if "max_new_tokens" in spec.eval.model_fields_set else "default")

    reasons.append(f"precision: {precision} ({s['precision'].why.removeprefix('planned: ')})")
    reasons.append(f"batch: {micro} per step x {per_device // micro} accumulated x {hw.gpus} device(s) "
                   f"= {t.batch_size}")
    reasons.append(f"gradient checkpointing: {'on' if checkpointing else 'off'} "
                   f"({s['gradient_checkpointing'].why.removeprefix('planned: ')})")
    if choice.memory is not None:
        reasons.append(f"memory: estimated peak {_gib(choice.memory.total)} at the {choice.memory.peak_phase}"
                       + (f", budget {budget:g} GiB" if budget else "") + " ("
                       + ", ".join(f"{k} {_gib(v)}" for k, v in choice.memory.as_dict().items()
                                   if v and k != "total") + ")")
    return Plan(name=name, method=method.kind, template=method.template, settings=s, reasons=reasons, notes=notes,
                memory=choice.memory, budget_bytes=int(budget * 2**30) if budget else None)
