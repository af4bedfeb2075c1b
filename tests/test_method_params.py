"""The estimator's trainable-parameter count of every method equals what PEFT/transformers train
on a real (tiny) model built from the method's resolved knobs, the values train.py reads; and
explicit and "auto" targets for the same layers count the same parameters on every architecture
(Llama, Phi-3 with fused qkv_proj / gate_up_proj, Qwen2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.catalog_data import MODELS
from ftc.compiler.estimate import RunShape, dims, estimate_memory
from ftc.compiler.methods import METHODS, MethodPlan

CASES = {  # case -> (kind, [method] fields)
    "lora": ("lora", {"r": 4}),
    "lora-qv": ("lora", {"r": 4, "target_modules": ["q_proj", "v_proj"]}),
    "dora": ("dora", {"r": 4}),
    "ia3": ("ia3", {}),
    "ia3-explicit": ("ia3", {"target_modules": ["k_proj", "down_proj"], "feedforward_modules": ["down_proj"]}),
    "prompt": ("prompt", {"virtual_tokens": 8}),
    "ptuning": ("ptuning", {"virtual_tokens": 8, "encoder_hidden_size": 32}),
    "prefix": ("prefix", {"virtual_tokens": 8}),
    "prefix-projection": ("prefix", {"virtual_tokens": 8, "projection": True, "encoder_hidden_size": 32}),
    "llama_adapter": ("llama_adapter", {"adapter_len": 4, "layers": 2}),
    "freeze": ("freeze", {"layers": 1}),
    "freeze-mlp-head": ("freeze", {"layers": 2, "modules": ["mlp"], "head": True}),
    "linear_probe": ("linear_probe", {}),
}


def _peft(plan: MethodPlan, model):  # type: ignore[no-untyped-def]
    """The model as train.py's method section builds it from the plan's knobs."""
    from peft import (AdaptionPromptConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptEncoderConfig,
                      PromptTuningConfig, get_peft_model)

    from ftc.core.events import EventLog
    from ftc.runtime.methods import freeze_except

    kind = plan.method.kind  # type: ignore[attr-defined]
    if kind in ("freeze", "linear_probe"):
        freeze_except(model, last_layers=plan["layers"], modules=plan["modules"], head=plan["head"],
                      events=EventLog(Path("/dev/null")))
        return model
    config = {
        "lora": lambda: LoraConfig(r=plan["r"], target_modules=plan["target_modules"], task_type="CAUSAL_LM"),
        "dora": lambda: LoraConfig(r=plan["r"], target_modules=plan["target_modules"], use_dora=True,
                                   task_type="CAUSAL_LM"),
        "ia3": lambda: IA3Config(target_modules=plan["target_modules"], feedforward_modules=plan["feedforward_modules"],
                                 task_type="CAUSAL_LM"),
        "prompt": lambda: PromptTuningConfig(num_virtual_tokens=plan["virtual_tokens"], task_type="CAUSAL_LM"),
        "ptuning": lambda: PromptEncoderConfig(num_virtual_tokens=plan["virtual_tokens"],
                                               encoder_hidden_size=plan["encoder_hidden_size"], task_type="CAUSAL_LM"),
        "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=plan["virtual_tokens"],
                                             prefix_projection=plan["projection"],
                                             encoder_hidden_size=plan.get("encoder_hidden_size", 32),
                                             task_type="CAUSAL_LM"),
        "llama_adapter": lambda: AdaptionPromptConfig(adapter_len=plan["adapter_len"], adapter_layers=plan["layers"],
                                                      task_type="CAUSAL_LM"),
    }[kind]()
    return get_peft_model(model, config)


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_parameters_match_peft(case: str, tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    from ftc.runtime.trainer import count_parameters

    kind, fields = CASES[case]
    config = json.loads((tiny_model / "config.json").read_text())
    plan = METHODS[kind].model_validate(fields).resolve(config)
    trainable, _total = count_parameters(_peft(plan, AutoModelForCausalLM.from_pretrained(tiny_model)))
    assert plan.trainable_parameters(dims(config)) == trainable


TINY = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 128, "max_position_embeddings": 64}


@pytest.mark.parametrize("model_type", ["llama", "phi3", "qwen2"])
@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_auto_targets_match_peft_on_each_architecture(model_type: str, kind: str) -> None:
    """LoRA's "auto" targets on a real tiny model of the architecture: what PEFT trains is what the
    estimate counts (Phi-3's fused projections included)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftc.runtime.trainer import count_parameters

    config = {"model_type": model_type, **TINY}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config, pad_token_id=0, eos_token_id=1,
                                                                   bos_token_id=1))
    plan = METHODS[kind].model_validate({"r": 4}).resolve(config)
    assert plan["target_modules"] == list(LINEAR_MODULES[model_type])
    trainable, _total = count_parameters(_peft(plan, model))
    assert plan.trainable_parameters(dims(config)) == trainable


def _memory(plan: MethodPlan, config: dict[str, object]) -> int:
    shape = RunShape(config=config, method=plan, micro_batch=2, seq_len=512, gradient_checkpointing=False,
                     dtype="bfloat16", device="cuda", padded=True)
    return estimate_memory(shape).total


@pytest.mark.parametrize("hub_id", ["meta-llama/Llama-3.2-1B", "microsoft/Phi-3-mini-4k-instruct",
                                    "Qwen/Qwen2.5-0.5B"])
@pytest.mark.parametrize("kind", ["lora", "dora", "qlora"])
def test_explicit_and_auto_targets_estimate_the_same(hub_id: str, kind: str) -> None:
    """An explicit list of every linear layer and "auto" resolve to the same layers, so they count
    the same adapter parameters and estimate the same peak."""
    config = dict(MODELS[hub_id])
    every = list(LINEAR_MODULES[str(config["model_type"])])
    auto = METHODS[kind].model_validate({"r": 16}).resolve(config)
    explicit = METHODS[kind].model_validate({"r": 16, "target_modules": every}).resolve(config)
    d = dims(config)
    assert auto.trainable_parameters(d) == explicit.trainable_parameters(d) > 0
    assert _memory(auto, config) == _memory(explicit, config)
    # a subset counts only its own layers
    first = METHODS[kind].model_validate({"r": 16, "target_modules": every[:1]}).resolve(config)
    assert 0 < first.trainable_parameters(d) < auto.trainable_parameters(d)


def test_phi3_counts_its_fused_projections() -> None:
    """Phi-3-mini, r = 16 on every linear layer: 25.2 M adapter parameters (qkv_proj 3072 -> 9216,
    o_proj, gate_up_proj 3072 -> 16384, down_proj, 32 blocks), where the Llama-named estimate
    found 8.9 M for the explicit list (o_proj and down_proj only) and 29.9 M for "auto"."""
    config = dict(MODELS["microsoft/Phi-3-mini-4k-instruct"])
    plan = METHODS["lora"].model_validate({"r": 16, "target_modules": ["qkv_proj", "o_proj", "gate_up_proj",
                                                                       "down_proj"]}).resolve(config)
    assert plan.trainable_parameters(dims(config)) == 32 * 16 * ((3072 + 9216) + (3072 + 3072) + (3072 + 16384)
                                                                 + (8192 + 3072)) == 25_165_824
