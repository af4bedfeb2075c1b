"""Resolve every setting of a run: spec values as given, the rest chosen with a reason.

One builder per Plan section (model, data, method, hardware, optim, run policy); micro-batch and
checkpointing come from the memory estimate (plan/budget.py).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from ftc.compiler.catalog import find_gpu
from ftc.compiler.checks import Facts
from ftc.compiler.estimate import can_estimate
from ftc.compiler.estimate_shard import Loading
from ftc.compiler.evalchecks import metrics_of
from ftc.compiler.host import HostFacts
from ftc.compiler.literal import lit
from ftc.compiler.plan.budget import BatchChoice, by_strategy, choose_batch, gib
from ftc.compiler.plan.hyper import Hyper, choose
from ftc.compiler.plan.precision import precision_choice
from ftc.compiler.plan.kernels import attention_choice, liger_choice
from ftc.compiler.plan.lmhead import KEPT, lm_head_choice
from ftc.compiler.plan.speed import padding_free_choice
from ftc.compiler.plan.types import DataPlan, HardwarePlan, MethodSection, ModelPlan, OptimPlan, Plan, RunPolicy, Setting
from ftc.compiler.plan.objective import objective_notes, objective_plan
from ftc.compiler.spec import FORMAT_FIELDS, Spec
from ftc.compiler.tokens import data_settings


def _given(spec_value: Any, key: str, default: Any, default_why: str = "default") -> Setting:
    return Setting(spec_value, f"spec: {key}") if spec_value is not None else Setting(default, default_why)


def resolve_max_length(spec: Spec, facts: Facts) -> tuple[int, str]:
    """data.max_length, with "auto" resolved from the measured token lengths (checks ensured they exist)."""
    d, tokens = spec.data, facts.tokens
    config = facts.model.config if facts.model else None
    limit = config.get("max_position_embeddings") if config else None
    if d.max_length != "auto":
        if "max_length" in d.model_fields_set:
            return int(d.max_length), "spec: data.max_length"  # checks refused one above the context
        if isinstance(limit, int) and d.max_length > limit:
            return limit, f"default: {d.max_length}, capped at the model's context of {limit} tokens"
        return int(d.max_length), "default"
    assert tokens is not None
    value = max(16, -(-tokens.max // 8) * 8)
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
    """(training rows, optimizer steps per epoch), when the row count is known: the rows the data
    stage keeps (the share measured at compile time), less the held-out share, as packed rows."""
    rows = facts.data.rows if facts.data else None
    if rows is None:
        return None, None
    if facts.tokens is not None:
        rows = max(1, round(rows * facts.tokens.kept_share))
    validation = spec.data.validation
    if isinstance(validation, float) and validation > 0:
        rows -= math.ceil(rows * validation)  # the stage holds the share out rounded up
    if spec.data.packing and facts.tokens is not None and isinstance(spec.data.max_length, int):
        rows = max(1, math.ceil(rows * facts.tokens.packed_share(spec.data.max_length)))
    return rows, max(1, math.ceil(rows / spec.train.batch_size))


def _model(spec: Spec, facts: Facts, reasons: list[str], notes: list[str]) -> ModelPlan:
    model = facts.model
    assert model is not None
    if model.params is not None:
        reasons.append(f"model: {model.params / 1e6:,.0f}M parameters (from {model.facts_from})")
    else:
        notes.append(f"model facts for {lit(spec.model.base)} are not available offline; they are read when "
                     "the run downloads the model")
    if model.chat_template is False and spec.data.format != "text":
        notes.append("the tokenizer has no chat template: the run adds a ChatML template and saves it "
                     "with the model")
    adapter = None
    if facts.adapter is not None:
        a = facts.adapter
        trained = f"trained by run {a.run_dir}" if a.run_dir else "no run's plan.json beside it"
        adapter = Setting(a.folder, f"spec: model.adapter ({a.how}; {a.weights} sha256 {a.sha256[:16]})")
        reasons.append(f"adapter: continues the {a.peft_type} adapter in {a.folder} ({a.how}, {trained}; "
                       f"{a.weights} sha256 {a.sha256})")
        if a.run_dir is None:
            notes.append(f"the quantization {a.folder} was trained on is not recorded in an adapter folder (a run's "
                         "plan.json has it); check that method.quantize matches it")
    return ModelPlan(
        adapter=adapter,
        base_model=Setting(spec.model.base, f"spec: model.base ({model.origin})"),
        revision=_given(spec.model.revision, "model.revision", None),
        trust_remote_code=Setting(spec.model.trust_remote_code, "spec: model.trust_remote_code"
                                  if "trust_remote_code" in spec.model.model_fields_set else "default: off"))


def _files(source: str, kind: str, files: list[str] | None) -> str:
    """A directory of data files is read as the glob of its files' type."""
    if kind == "files" and files and Path(source).expanduser().is_dir():
        return f"{source.rstrip('/')}/*{Path(files[0]).suffix}"
    return source


def _optional_fields(spec: Spec, facts: Facts, notes: list[str]) -> Setting[list[str]]:
    """The format's fields the data has (an instruction row's `input`, `system`)."""
    d = spec.data
    assert facts.data is not None
    if facts.data.columns is not None:
        present = [f for f in FORMAT_FIELDS[d.format] if d.columns.get(f, f) in facts.data.columns]
        return Setting(present, "derived: columns present in the data")
    if d.format == "instruction":
        notes.append("the dataset's columns are unknown offline: `input` and `system` are used only if "
                     "mapped in [data.columns]")
    return Setting([f for f in FORMAT_FIELDS[d.format] if f in d.columns],
                   "derived: the fields mapped in data.columns (columns unknown offline)")


def _data(spec: Spec, facts: Facts, max_length: Setting[int], notes: list[str]) -> DataPlan:
    d, c, data = spec.data, spec.data.clean, facts.data
    assert data is not None
    stage = data_settings(spec, max_length.value)  # decided once; train.py rebuilds it from CONFIG
    files = _files(d.source, data.kind, data.files)
    mix = [{"source": _files(entry.source, mixed.kind, mixed.files),
            "kind": mixed.loader if mixed.kind == "files" else mixed.kind, "weight": entry.weight}
           for entry, mixed in zip(d.mix, facts.mix)]
    return DataPlan(
        settings=stage,
        data_source=Setting(d.source, "spec: data.source"),
        data_kind=Setting(data.kind, "derived: from the source"),
        data_loader=Setting(data.loader, "derived: file type"),
        data_files=Setting(files, "derived: data.source" if files == d.source else "derived: every file of data.source"),
        mix=Setting(mix, "spec: data.mix"),
        data_format=Setting(stage.format, "spec: data.format"),
        columns=Setting(stage.columns, "spec: data.columns" if d.columns else "default: the format's field names"),
        optional_fields=_optional_fields(spec, facts, notes),
        data_split=Setting(d.split, "spec: data.split" if d.split != "train" else "default"),
        validation=Setting(stage.validation, "spec: data.validation"),
        validation_loader=Setting(facts.validation.loader if facts.validation else None, "derived: file type")
        if isinstance(d.validation, str) else None,
        max_length=max_length,
        roles=Setting(stage.roles, "spec: data.roles (added to human/gpt/user/assistant/system)" if d.roles
                      else "default: the usual names (human/gpt/user/assistant/system)"),
        train_on=Setting(stage.train_on, "derived: text data trains every token" if d.format == "text"
                         else "spec: data.train_on" if "train_on" in d.model_fields_set
                         else "default: every assistant turn"),
        template=Setting(stage.template, "spec: data.template" if d.template is not None else "default: none"),
        dedup=Setting(stage.dedup, "spec: data.clean.dedup" if "dedup" in c.model_fields_set
                      else "default: exact duplicates are dropped"),
        near_dedup=Setting(stage.near_dedup, "spec: data.clean.near_dedup" if c.near_dedup is not None
                           else "default: off"),
        min_tokens=Setting(stage.min_tokens, "spec: data.clean.min_tokens" if "min_tokens" in c.model_fields_set
                           else "default: no lower bound"),
        max_tokens=Setting(stage.max_tokens, "spec: data.clean.max_tokens" if c.max_tokens is not None
                           else "default: no upper bound"),
        untrained=Setting(stage.untrained, "spec: data.clean.untrained" if "untrained" in c.model_fields_set
                          else "default: stop on examples with no trained token"),
        packing=Setting(d.packing, "spec: data.packing" if "packing" in d.model_fields_set else "default: off"),
        padding_free=Setting(d.padding_free, "spec: data.padding_free" if "padding_free" in d.model_fields_set
                             else "default: off"))


def _method(spec: Spec, facts: Facts) -> MethodSection:
    method = spec.method
    assert facts.model is not None
    knobs = {key: Setting(knob.value, knob.why) for key, knob in method.resolve(facts.model.config).settings.items()}
    return MethodSection(method=Setting(method.kind, "spec: method.kind"), quantization=knobs.pop("quantization"),
                         trainer=knobs.pop("trainer"), knobs=knobs,
                         config_names={key: name for key in knobs if (name := method.config_name(key))})


def _hardware(spec: Spec, host: HostFacts, config: dict[str, Any] | None) -> HardwarePlan:
    hw = spec.hardware
    precision, why = precision_choice(spec, host)
    load_dtype = Setting({"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision], "derived: precision")
    if (own := spec.method.load_dtype(precision)) is not None:
        load_dtype = Setting(*own)
    gpu = find_gpu(hw.gpu) if hw.gpu else None
    budget = hw.vram_gb if hw.vram_gb is not None else (gpu.memory_gib if gpu else None)
    return HardwarePlan(
        device=Setting(hw.device, "spec: hardware.device"),
        devices=Setting(hw.devices, "spec: hardware.devices" if "devices" in hw.model_fields_set else "default"),
        nodes=Setting(hw.nodes, "spec: hardware.nodes" if "nodes" in hw.model_fields_set else "default"),
        strategy=Setting("single", "derived: one device"), offload=Setting("none", "default: nothing offloaded"),
        precision=Setting(precision, why), load_dtype=load_dtype,
        attention=attention_choice(spec, host, precision, config), liger=liger_choice(spec, host, config),
        budget_gib=Setting(budget, "spec: hardware.vram_gb" if hw.vram_gb else "derived: hardware.gpu"
                           if gpu else "default: no budget"))


def _parallel(spec: Spec, facts: Facts, hardware: HardwarePlan, choice: BatchChoice) -> HardwarePlan:
    """The strategy the planner chose, and the settings it brings: FSDP's unit, 4-bit storage under sharding."""
    parallel, offload = choice.parallel, spec.hardware.offload
    assert facts.model is not None
    extra: dict[str, Setting[Any]] = {}
    if parallel.strategy == "fsdp":  # accelerate's TRANSFORMER_BASED_WRAP: one FSDP unit per decoder layer
        arch = str((facts.model.config.get("architectures") or ["LlamaForCausalLM"])[0])
        extra["fsdp_layer"] = Setting(arch.replace("ForCausalLM", "DecoderLayer"),
                                      f"derived: the decoder layer class of {arch}, one FSDP unit each")
    if parallel.strategy in ("fsdp", "zero3") and spec.method.resolve(facts.model.config)["quantization"] == "nf4":
        extra["quant_storage"] = Setting(hardware.load_dtype.value, (
            "planned: sharding needs the 4-bit weights stored in the compute dtype; the default uint8 storage "
            "trains at loss 0 / NaN gradients under FSDP2 (accelerate#3983; PEFT docs, FSDP + QLoRA)"))
    return replace(hardware, strategy=Setting(parallel.strategy, choice.why_strategy), **extra,
                   offload=Setting(parallel.offload, "spec: hardware.offload" if offload == parallel.offload != "none"
                                   else choice.why_strategy if parallel.offload != "none"
                                   else "default: nothing offloaded"))


def _train_key(spec: Spec, key: str) -> Setting[Any]:
    """A [train] value as the spec holds it: the spec's own default where the spec says nothing."""
    return Setting(getattr(spec.train, key), f"spec: train.{key}" if key in spec.train.model_fields_set else "default")


def _optim(spec: Spec, facts: Facts, hardware: HardwarePlan, seq_len: int,
           hyper: Hyper) -> tuple[OptimPlan, BatchChoice]:
    """spec carries hyper's batch size already (build_plan); hyper has the reasons."""
    t, world = spec.train, spec.hardware.world
    assert facts.model is not None
    _, steps_per_epoch = _steps(spec, facts)
    if t.max_steps is not None:
        epochs, max_steps = Setting(None, "spec: train.max_steps overrides epochs"), Setting(t.max_steps,
                                                                                             "spec: train.max_steps")
        total_steps: int | None = t.max_steps
    else:
        epochs, max_steps = Setting(*hyper.epochs), Setting(-1, "derived: train by epochs")
        total_steps = math.ceil(steps_per_epoch * epochs.value) if steps_per_epoch else None
    per_device = t.batch_size // world
    config = facts.model.config if can_estimate(facts.model.config) else None
    choice = choose_batch(spec, config, hardware.load_dtype.value, hardware.budget_gib.value, per_device,
                          seq_len=seq_len, attention=hardware.attention.value)
    return OptimPlan(
        learning_rate=Setting(*hyper.learning_rate), epochs=epochs, max_steps=max_steps,
        batch_size=Setting(*hyper.batch_size),
        micro_batch_size=Setting(choice.micro, choice.why_micro),
        grad_accum=Setting(per_device // choice.micro,
                           f"derived: {t.batch_size} = {choice.micro} x {per_device // choice.micro} x {world} device(s)"),
        gradient_checkpointing=Setting(choice.checkpointing, choice.why_checkpointing),
        optimizer=Setting(choice.optimizer, choice.why_optimizer),
        scheduler=Setting(*hyper.scheduler), warmup=Setting(*hyper.warmup),
        weight_decay=_train_key(spec, "weight_decay"),
        max_grad_norm=_train_key(spec, "max_grad_norm"),
        seed=_train_key(spec, "seed"),
        total_steps=Setting(total_steps, "derived: rows / batch_size x epochs" if total_steps else
                            "derived: unknown until the data is read")), choice


def _run(spec: Spec, total_steps: int | None) -> RunPolicy:
    t, e = spec.train, spec.eval
    has_validation = spec.data.validation != 0
    every = (total_steps or 500) // 5
    return RunPolicy(
        logging_steps=Setting(t.logging_steps, "spec: train.logging_steps") if t.logging_steps != "auto"
        else Setting(max(1, min(50, (total_steps or 500) // 40)), "planned: about 40 step events per run"),
        eval_steps=Setting(e.steps, "spec: eval.steps") if e.steps != "auto"
        else Setting(max(1, every) if has_validation else None, "planned: validation loss about 5 times per run"
                     if has_validation else "derived: no validation data"),
        save_steps=Setting(t.save_steps, "spec: train.save_steps") if t.save_steps != "auto"
        else Setting(max(1, every), "planned: a checkpoint about 5 times per run"),
        keep_checkpoints=Setting(t.keep_checkpoints, "spec: train.keep_checkpoints" if "keep_checkpoints"
                                 in t.model_fields_set else "default: the last 2 and the best by validation loss"),
        on_nan=Setting(t.on_nan, "spec: train.on_nan" if "on_nan" in t.model_fields_set
                       else "default: skip NaN steps, then roll back with half the learning rate"),
        nan_patience=_train_key(spec, "nan_patience"),
        early_stopping_patience=_given(t.early_stopping_patience, "train.early_stopping_patience", None,
                                       "default: off"),
        compare=Setting(e.compare, "spec: eval.compare" if e.compare else "default: off"),
        max_new_tokens=Setting(e.max_new_tokens, "spec: eval.max_new_tokens"
                               if "max_new_tokens" in e.model_fields_set else "default"),
        metrics=Setting(metrics_of(spec), "spec: eval.metrics" if e.metrics else
                        "default: exact match of the compared answers" if e.compare else "default: none"),
        fail_if_worse=Setting(list(e.fail_if_worse), "spec: eval.fail_if_worse" if e.fail_if_worse
                              else "default: no regression gate"),
        report_to=Setting(list(t.report_to), "spec: train.report_to" if t.report_to else "default: none"))


def _summary(spec: Spec, optim: OptimPlan, hardware: HardwarePlan, choice: BatchChoice) -> list[str]:
    """The decisions plan.md lists first: precision, batch split, checkpointing, memory."""
    t, world = spec.train, spec.hardware.world
    micro, accum, budget = optim.micro_batch_size.value, optim.grad_accum.value, hardware.budget_gib.value
    lines = []
    if optim.total_steps.value:
        lines.append(f"steps: {optim.total_steps.value} optimizer steps of {t.batch_size} examples")
    lines += [f"{name} {setting.value:g}: {setting.why.removeprefix('planned: ')}" for name, setting in
              (("batch size", optim.batch_size), ("epochs", optim.epochs), ("learning rate", optim.learning_rate),
               ("warmup", optim.warmup)) if setting.why.startswith(("planned", "measured"))]
    lines.append(f"precision: {hardware.precision.value} ({hardware.precision.why.removeprefix('planned: ')})")
    if spec.hardware.device == "cuda":  # the speed choices on a GPU (compiler/plan/kernels.py, plan/budget.py)
        lines += [f"attention: {hardware.attention.value} ({hardware.attention.why.removeprefix('planned: ')})",
                  f"Liger kernels: {'on' if hardware.liger.value else 'off'} "
                  f"({hardware.liger.why.removeprefix('planned: ')})",
                  f"optimizer: {optim.optimizer.value} ({optim.optimizer.why.removeprefix('planned: ')})"]
    lines += [f"batch: {micro} per step x {accum} accumulated x {world} device(s) = {t.batch_size}",
              f"gradient checkpointing: {'on' if choice.checkpointing else 'off'} "
              f"({optim.gradient_checkpointing.why.removeprefix('planned: ')})"]
    if choice.parallel.strategy != "single":
        lines.append(f"devices: {choice.parallel.label} ({choice.why_strategy.removeprefix('planned: ')})")
    if choice.memory is not None and choice.memory.host:
        lines.append(f"host RAM: an estimated {gib(choice.memory.host)} per process for what is offloaded, "
                     f"{gib(choice.memory.host * spec.hardware.devices)} per node")
    if choice.memory is not None and (world > 1 or spec.hardware.cpu_ram_gb):
        lines.append(_loading_line(spec, choice.memory.loading))
    if choice.memory is not None:
        per = " per device" if world > 1 else ""
        lines.append(f"memory: estimated peak {gib(choice.memory.total)}{per} at the {choice.memory.peak_phase}"
                     + (f", budget {budget:g} GiB" if budget else "") + " ("
                     + ", ".join(f"{k} {gib(v)}" for k, v in choice.memory.as_dict().items() if v and k != "total")
                     + ")")
    return lines


def _loading_line(spec: Spec, load: Loading) -> str:
    """plan.md's host RAM while from_pretrained builds the model (estimate_shard.loading)."""
    hw = spec.hardware
    private = ("nothing private" if not load.first and not load.each else f"{gib(load.each)} private per process"
               if load.first == load.each else f"{gib(load.first)} private for rank 0, {gib(load.each)} for each other")
    nodes = f"{gib(load.node(hw.devices))} on node 0" + (f", {gib(load.node(hw.devices, first=False))} on each "
                                                        "other node" if hw.nodes > 1 else "")
    checked = f" (hardware.cpu_ram_gb = {hw.cpu_ram_gb:g})" if hw.cpu_ram_gb else ""
    return (f"host RAM while loading: {load.why}: the checkpoint's {gib(load.checkpoint)} mapped (page cache) + "
            f"{private}; {nodes}{checked}")


def _data_reasons(spec: Spec, facts: Facts, why_seq_len: str) -> list[str]:
    lines = []
    if facts.tokens is not None:
        n = facts.tokens
        lines.append(f"tokens: {n.examples} examples measured with {Path(n.tokenizer).parent.name}'s tokenizer: "
                     f"p50 {n.p50}, p90 {n.p90}, p95 {n.p95}, p99 {n.p99}, max {n.max}")
    lines.append(why_seq_len)
    train_rows, _ = _steps(spec, facts)
    if train_rows is not None:
        assert facts.data is not None
        share = facts.tokens.kept_share if facts.tokens else 1.0
        kept = f", {share:.0%} kept by cleaning" if share < 1 else ""
        packed = " packed rows" if spec.data.packing and facts.tokens else ""
        lines.append(f"data: {facts.data.rows} rows{kept}, about {train_rows}{packed} for training")
    return lines


def build_plan(spec: Spec, facts: Facts, name: str, measured_lr: tuple[float, str] | None = None) -> Plan:
    """The fully resolved plan for a checked spec: one builder per section (measured_lr: ftc.compiler.lrauto's)."""
    assert facts.model is not None and facts.data is not None  # run_checks raised otherwise
    max_length, why_max_length = resolve_max_length(spec, facts)
    if spec.data.max_length != max_length:  # the rest of the plan reads the resolved number
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"max_length": max_length})})
    seq_len, why_seq_len = sequence_length(spec, facts, max_length)
    reasons: list[str] = []
    notes: list[str] = []
    model = _model(spec, facts, reasons, notes)
    data = _data(spec, facts, Setting(max_length, why_max_length), notes)
    reasons += _data_reasons(spec, facts, why_seq_len)
    hardware = _hardware(spec, facts.host, facts.model.config)
    config = facts.model.config if can_estimate(facts.model.config) else None
    hyper = choose(spec, _steps(spec, facts)[0], facts.tokens, facts.model.config, measured_lr)
    spec = spec.model_copy(update={"train": spec.train.model_copy(update={"batch_size": hyper.batch_size[0]})})
    optim, choice = _optim(spec, facts, hardware, seq_len, hyper)
    free = padding_free_choice(spec, facts.tokens, facts.model.config, facts.model.params,
                               optim.micro_batch_size.value, max_length, hardware.attention.value)
    data = replace(data, padding_free=free)
    reasons.append(f"padding-free: {'on' if free.value else 'off'} ({free.why.split(': ', 1)[-1]})")
    notes += objective_notes(spec)
    hardware = _parallel(spec, facts, hardware, choice)
    head = lm_head_choice(spec.hardware.device, spec.train.objective, spec.method.trainer, hardware.strategy.value,
                          facts.model.config)
    hardware = replace(hardware, lm_head=head)
    if head.value == KEPT:
        reasons.append(f"loss head: kept positions only ({head.why.removeprefix('planned: ')})")
    reasons += _summary(spec, optim, hardware, choice)
    budget = hardware.budget_gib.value
    table = by_strategy(spec, config, hardware.load_dtype.value, choice, spec.train.batch_size // spec.hardware.world,
                        seq_len, attention=hardware.attention.value)
    return Plan(name=name, template=spec.method.template, model=model, data=data, method=_method(spec, facts),
                hardware=hardware, optim=optim, run=_run(spec, optim.total_steps.value), objective=objective_plan(spec),
                reasons=tuple(reasons), notes=tuple(notes), memory=choice.memory, budget_bytes=int(budget * 2**30) if budget else None,
                by_strategy=table)
