"""What every method config shares: the pydantic base and the class-level facts the planner and
the emitter read (template, title, default learning rate, trainer, mergeability)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Quantize = Literal["none", "nf4", "int8"]
AdapterName = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)


class MethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    template: ClassVar[str]
    """templates/methods/<template>.py.j2 emits the method section."""
    title: ClassVar[str]
    """What train.py's docstring calls the method."""
    default_learning_rate: ClassVar[float]
    trainer: ClassVar[Literal["sft", "hf"]] = "sft"
    """"sft": TRL's SFTTrainer; "hf": transformers' Trainer with a padding collator (PEFT's
    prompt-learning methods and LLaMA-Adapter, which SFTTrainer's batches break)."""
    mergeable: ClassVar[bool] = False
    """Whether `ftc merge` can fold the trained weights into the base."""
    peft: ClassVar[bool] = False
    """Whether the result is a PEFT adapter (reloaded with PeftModel.from_pretrained)."""
    checkpointing_ok: ClassVar[bool] = True
    """Whether training works with gradient checkpointing."""

    CONFIG_NAMES: ClassVar[dict[str, str]] = {
        "double_quant": "DOUBLE_QUANT", "int8_threshold": "INT8_THRESHOLD", "layers": "TRAIN_LAYERS",
        "modules": "TRAIN_MODULES", "head": "TRAIN_HEAD", "r": "LORA_R", "alpha": "LORA_ALPHA",
        "dropout": "LORA_DROPOUT", "target_modules": "TARGET_MODULES", "feedforward_modules": "FEEDFORWARD_MODULES",
        "svd_iters": "PISSA_SVD_ITERS", "ratio": "LORAPLUS_RATIO", "virtual_tokens": "VIRTUAL_TOKENS",
        "projection": "PREFIX_PROJECTION", "encoder": "PROMPT_ENCODER", "encoder_hidden_size": "ENCODER_HIDDEN_SIZE",
        "init_text": "PROMPT_INIT_TEXT", "adapter_len": "ADAPTER_LEN", "adapter_name": "ADAPTER_NAME",
    }
    """train.py's CONFIG name of each knob the method's code reads."""

    @classmethod
    def config_names(cls) -> dict[str, str]:
        """CONFIG names of this method's knobs."""
        return dict(cls.CONFIG_NAMES)

    @property
    def quantization(self) -> str | None:
        """bitsandbytes format of the frozen base: "nf4", "int8" or None."""
        value = getattr(self, "quantize", "none")
        return None if value == "none" else value
