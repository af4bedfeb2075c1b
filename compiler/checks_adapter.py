"""Checks of `[model] adapter`: the adapter a spec continues must be one the method can load trainable,
trained on the same base and quantization, with the settings the spec's method builds (train.py hands
its own PEFT config to PeftModel.from_pretrained, so every setting that shapes or scales the weights
must be the adapter's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ftc.compiler.adapter import AdapterFacts
from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.checks import Facts, Finding, check
from ftc.compiler.literal import lit
from ftc.compiler.methods import METHODS
from ftc.compiler.methods.base import MethodBase
from ftc.compiler.spec import Spec

PEFT_TYPES = {"LoraConfig": "LORA", "IA3Config": "IA3", "AdaptionPromptConfig": "ADAPTION_PROMPT",
              "PrefixTuningConfig": "PREFIX_TUNING", "PromptEncoderConfig": "P_TUNING",
              "PromptTuningConfig": "PROMPT_TUNING"}
"""The PEFT type of each config class a method's template builds."""
PROMPT_LEARNING = ("PREFIX_TUNING", "P_TUNING", "PROMPT_TUNING")
# (adapter_config.json key, method knob) pairs that shape or scale the weights, per PEFT type.
SAME = {"LORA": (("r", "r"), ("lora_alpha", "alpha"), ("target_modules", "target_modules")),
        "IA3": (("target_modules", "target_modules"), ("feedforward_modules", "feedforward_modules")),
        "ADAPTION_PROMPT": (("adapter_len", "adapter_len"), ("adapter_layers", "layers"))}
LORA_UNSET = ("bias", "modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern", "lora_bias",
              "use_qalora", "fan_in_fan_out", "trainable_token_indices", "layer_replication")
"""LoraConfig settings ftc's LoRA kinds leave unset (off, none or empty): an adapter that sets one cannot be
rebuilt from the spec."""
KEY_ADAPTER = "model.adapter"


def _peft_type(method: type[MethodBase]) -> str:
    return PEFT_TYPES[method.imports().peft[0]]


def _kind_for(adapter: AdapterFacts) -> str | None:
    """The first kind that continues the adapter: its PEFT type and flags, loaded trainable, no rewritten base."""
    for kind, method in METHODS.items():
        if (method.peft and not method.rewrites_base_weights and _peft_type(method) not in PROMPT_LEARNING
                and _peft_type(method) == adapter.peft_type
                and all(bool(adapter.config.get(k)) == v for k, v in method.peft_flags.items())):
            return kind
    return None


def _normal(value: Any, arch: str | None) -> Any:
    """A knob's value as adapter_config.json writes it: module lists as sets ("all-linear" named)."""
    if value == "all-linear" and arch in LINEAR_MODULES:
        return set(LINEAR_MODULES[arch])
    if isinstance(value, (list, tuple, set)):
        return set(value)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def _settings_differ(spec: Spec, facts: Facts, adapter: AdapterFacts) -> Iterator[Finding]:
    config = facts.model.config if facts.model else None
    arch = str(config.get("model_type")) if config else None
    plan = spec.method.resolve(config)
    source = f"the adapter in {adapter.folder} ({adapter.folder}/adapter_config.json)"
    for saved_key, knob in SAME[adapter.peft_type]:
        saved, ours = adapter.config.get(saved_key), plan.get(knob)
        if ours is None or ours == "all-linear" and arch not in LINEAR_MODULES:
            continue  # decided by PEFT at run time: nothing to compare here
        if _normal(saved, arch) != _normal(ours, arch):
            shown = sorted(saved) if isinstance(saved, list) else saved
            yield f"method.{knob}", (f"{source} has {saved_key} = {lit(shown)}, but method.{knob} is {lit(ours)}; "
                                     f"set method.{knob} = {lit(shown)} to continue it (a different value changes "
                                     "the adapter's shape or scale)")
    if adapter.peft_type == "LORA":
        kind = spec.method.kind  # type: ignore[attr-defined]
        for flag, ours in type(spec.method).peft_flags.items():
            saved = bool(adapter.config.get(flag))
            if saved != ours:
                yield "method.kind", (f"{source} has {flag} = {lit(saved)}, but kind = {kind!r} "
                                      f"{'sets it' if ours else 'leaves it off'}; use kind = {_kind_for(adapter)!r} "
                                      "to continue it")
        for key in LORA_UNSET:
            if adapter.config.get(key) not in (None, {}, [], False, "none"):
                yield KEY_ADAPTER, (f"{source} sets {key} = {lit(adapter.config[key])}, which ftc's LoRA kinds do not "
                                    "build; continue it with PEFT directly, or start a new adapter")
        init = adapter.config.get("init_lora_weights", True)
        if init not in (True, False, "gaussian"):
            yield KEY_ADAPTER, (f"{source} was initialised with init_lora_weights = {lit(init)} and was not converted "
                                "to a plain LoRA: it applies to a rewritten base, not to model.base; continue the "
                                "converted result (a PiSSA run's final/) instead")


def _kind_problems(spec: Spec, adapter: AdapterFacts) -> Iterator[Finding]:
    kind, method = spec.method.kind, spec.method  # type: ignore[attr-defined]
    if not method.peft:
        yield "method.kind", (f"kind = {kind!r} trains the model's own weights, not an adapter, so it cannot continue "
                              f"one; use kind = {_kind_for(adapter) or 'lora'!r}, or merge the adapter "
                              "(`ftc merge`) and set model.base to the merged folder")
        return
    if method.rewrites_base_weights:
        yield "method.kind", (f"kind = {kind!r} starts from the base's singular vectors and rewrites the base, so it "
                              "cannot load a trained adapter; a PiSSA run's final/ is a plain LoRA for the original "
                              "base: continue it with kind = \"lora\" (and its r)")
        return
    ours = _peft_type(type(method))
    if ours in PROMPT_LEARNING or adapter.peft_type in PROMPT_LEARNING:
        yield KEY_ADAPTER, (f"a {adapter.peft_type if adapter.peft_type in PROMPT_LEARNING else ours} adapter cannot "
                            "be continued: PEFT 0.21 loads prompt-learning adapters frozen only (PeftModel."
                            "from_pretrained: \"Cannot set a prompt learning adapter to trainable\"); start a new "
                            "one, or continue a LoRA, IA3 or LLaMA-Adapter adapter")
    elif adapter.peft_type != ours:
        fix = (f"use kind = {_kind_for(adapter)!r}" if _kind_for(adapter) else
               "ftc continues LoRA, IA3 and LLaMA-Adapter adapters only")
        yield "method.kind", (f"the adapter in {adapter.folder} is a {adapter.peft_type} adapter, but kind = {kind!r} "
                              f"builds a {ours} one; {fix}")
    elif adapter.config.get("task_type") not in (None, "CAUSAL_LM"):
        yield KEY_ADAPTER, (f"the adapter in {adapter.folder} is for task_type {adapter.config['task_type']!r}; ftc "
                            "trains causal language models (CAUSAL_LM)")


def _base_problems(spec: Spec, facts: Facts, adapter: AdapterFacts) -> Iterator[Finding]:
    run = adapter.run_settings
    if run is not None:
        where = f"run {adapter.run_dir}'s plan.json"
        if run.get("base_model") != spec.model.base:
            yield "model.base", (f"the adapter was trained on {lit(run.get('base_model'))} ({where}), but model.base is "
                                 f"{lit(spec.model.base)}; set model.base = {lit(run.get('base_model'))}")
        elif run.get("revision") != spec.model.revision:
            yield "model.revision", (f"the adapter was trained on revision {lit(run.get('revision'))} ({where}); set "
                                     f"model.revision = {lit(run.get('revision'))}")
        trained = run.get("quantization")
        if trained != spec.method.quantization:
            names = {None: "an unquantized base", "nf4": "a 4-bit NF4 base", "int8": "an 8-bit base"}
            fix = {None: "kind = \"lora\" (or quantize = \"none\")", "nf4": "kind = \"qlora\" (or quantize = \"nf4\")",
                   "int8": "quantize = \"int8\""}.get(trained, f"quantize = {lit(trained)}")
            yield "method.quantize", (f"the adapter was trained on {names.get(trained, lit(trained))} ({where}), but "
                                      f"kind = {spec.method.kind!r} loads {names.get(spec.method.quantization, '?')}; "  # type: ignore[attr-defined]
                                      f"set {fix} so it continues on the weights it was trained on")
        return
    saved = adapter.config.get("base_model_name_or_path")
    if saved is not None and not _same_base(str(saved), spec.model.base):
        yield "model.base", (f"the adapter in {adapter.folder} was trained on {lit(saved)} (adapter_config.json "
                             f"base_model_name_or_path), but model.base is {lit(spec.model.base)}; set model.base = "
                             f"{lit(saved)}")


def _same_base(saved: str, base: str) -> bool:
    """Whether adapter_config.json's base names model.base: the same id, directory or bundled model's folder."""
    from pathlib import Path

    from ftc.core.bundled import BUNDLED, cache_root

    if saved == base:
        return True
    candidates = [Path(base).expanduser()]
    if base in BUNDLED:
        candidates.append(cache_root() / "models" / base)
    try:
        return any(Path(saved).expanduser().resolve() == c.resolve() for c in candidates)
    except (OSError, RuntimeError):
        return False


@check
def adapter_continues(spec: Spec, facts: Facts) -> Iterator[Finding]:
    """model.adapter: a kind that loads it trainable, the base and quantization it was trained on, its settings."""
    adapter = facts.adapter
    if adapter is None:
        return
    kind = list(_kind_problems(spec, adapter))
    yield from kind
    yield from _base_problems(spec, facts, adapter)
    if not kind:
        yield from _settings_differ(spec, facts, adapter)
