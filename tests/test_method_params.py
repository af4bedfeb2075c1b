"""The estimator's trainable-parameter count of every method equals what PEFT/transformers train
on a real (tiny) model built the way train.py builds it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftc.compiler.estimate import RunShape, dims, trainable_parameters

LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CASES = {  # kind -> (RunShape fields, how train.py builds it)
    "lora": ({"lora_r": 4}, "lora"),
    "lora-qv": ({"lora_r": 4, "lora_targets": ("q_proj", "v_proj")}, "lora"),
    "dora": ({"lora_r": 4}, "dora"),
    "ia3": ({"lora_targets": ("k_proj", "v_proj", "down_proj"), "ia3_feedforward": ("down_proj",)}, "ia3"),
    "prompt": ({"virtual_tokens": 8}, "prompt"),
    "ptuning": ({"virtual_tokens": 8, "encoder_hidden": 32}, "ptuning"),
    "prefix": ({"virtual_tokens": 8}, "prefix"),
    "prefix-projection": ({"virtual_tokens": 8, "encoder_hidden": 32}, "prefix"),
    "llama_adapter": ({"virtual_tokens": 4, "adapter_layers": 2}, "llama_adapter"),
    "freeze": ({"train_layers": 1}, "freeze"),
    "freeze-mlp-head": ({"train_layers": 2, "train_modules": ("mlp",), "train_head": True}, "freeze"),
    "linear_probe": ({"train_layers": 0, "train_head": True}, "freeze"),
}


def _build(kind: str, fields: dict, tiny_model: Path):  # type: ignore[no-untyped-def,type-arg]
    from peft import (AdaptionPromptConfig, IA3Config, LoraConfig, PrefixTuningConfig, PromptEncoderConfig,
                      PromptTuningConfig, get_peft_model)
    from transformers import AutoModelForCausalLM

    from ftc.core.events import EventLog
    from ftc.runtime.methods import freeze_except

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    if kind == "freeze":
        freeze_except(model, last_layers=fields["train_layers"], modules=list(fields.get("train_modules", ())),
                      head=fields.get("train_head", False), events=EventLog(tiny_model.parent / "ev.jsonl"))
        return model
    config = {
        "lora": lambda: LoraConfig(r=4, target_modules=list(fields.get("lora_targets", LLAMA)), task_type="CAUSAL_LM"),
        "dora": lambda: LoraConfig(r=4, target_modules=list(LLAMA), use_dora=True, task_type="CAUSAL_LM"),
        "ia3": lambda: IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
                                 task_type="CAUSAL_LM"),
        "prompt": lambda: PromptTuningConfig(num_virtual_tokens=8, task_type="CAUSAL_LM"),
        "ptuning": lambda: PromptEncoderConfig(num_virtual_tokens=8, encoder_hidden_size=32, task_type="CAUSAL_LM"),
        "prefix": lambda: PrefixTuningConfig(num_virtual_tokens=8, prefix_projection="encoder_hidden" in fields,
                                             encoder_hidden_size=32, task_type="CAUSAL_LM"),
        "llama_adapter": lambda: AdaptionPromptConfig(adapter_len=4, adapter_layers=2, task_type="CAUSAL_LM"),
    }[kind]()
    return get_peft_model(model, config)


@pytest.mark.parametrize("case", list(CASES))
def test_trainable_parameters_match_peft(case: str, tiny_model: Path) -> None:
    from ftc.runtime.trainer import count_parameters

    fields, kind = CASES[case]
    config = json.loads((tiny_model / "config.json").read_text())
    method = case.split("-")[0] if case.split("-")[0] != "freeze" else "freeze"
    shape = RunShape(config=config, method=method, micro_batch=1, seq_len=16, gradient_checkpointing=False,
                     **fields)
    trainable, _total = count_parameters(_build(kind, fields, tiny_model))
    assert trainable_parameters(shape, dims(config)) == trainable
