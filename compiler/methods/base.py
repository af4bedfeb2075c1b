"""The method protocol: the pydantic base every method config derives from, the class-level facts
the planner and the emitter read, and the hooks each method implements so that plan, estimate,
checks and emit never test the kind.

A method resolves itself once (`resolve`: auto targets, defaults, layer caps) into a MethodPlan;
the estimate reads what it trains (`trainable_parameters`, `largest_trainable_tensor`) and what
its modules keep (`activation_terms`); `checks` yields its consistency problems; `imports` names
what its emitted code imports; `template` names the template that emits it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftc.compiler.limits import LIST_ITEMS, Name

if TYPE_CHECKING:  # only for annotations: checks and estimate import the methods, not the reverse
    from ftc.compiler.checks import Facts
    from ftc.compiler.estimate import Dims
    from ftc.compiler.spec import Spec

Quantize = Literal["none", "nf4", "int8"]
AdapterName = Field(None, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$", max_length=64)
NameList = Field(min_length=1, max_length=LIST_ITEMS)
"""An explicit list of module names: at least one (an empty list would train nothing)."""
Finding = tuple[str, str]
"""(spec key, message), as checks.py's checks yield them."""

# Knobs read only with one quantization (the BitsAndBytesConfig of that format).
_QUANTIZED_ONLY = {"double_quant": "nf4", "int8_threshold": "int8"}


class KeyConflict(ValueError):
    """A spec key that another key makes wrong or unread: raised in a validator, it is reported at
    `key` (the spec path, e.g. "method.double_quant") rather than at the validated table."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True)
class Knob:
    """A resolved method value and where it came from (the plan turns it into a Setting)."""

    value: Any
    why: str


@dataclass(frozen=True)
class ActivationTerms:
    """What a method changes in the activations the estimate adds up (compiler/estimate.py).
    The defaults describe a frozen base whose blocks see an input that requires grad."""

    keeps_linear_inputs: bool = False
    """Blocks keep every linear layer's input, as trained ones do (full, freeze, and LoRA, whose
    adapters read them); False: only a frozen block's tensors."""
    final_norm_trained: bool = False
    """The final RMSNorm keeps its normalized value too (measured for full and LoRA)."""
    per_token: int = 0  # bytes per token and block that the method's own modules keep
    frozen_norms: bool = False
    """The embedding and every RMSNorm weight are frozen and the norms' outputs are the linears' inputs: a
    frozen weight's multiply keeps no normalized value, and the embedding output needs no gradient, so
    neither it nor the first norm's fp32 input is kept (autograd saves a mul's operand only for the
    other's gradient; measured: LoRA without dropout)."""
    prompt_tokens: int = 0  # virtual tokens prepended to every input (prompt, ptuning)
    prefix_tokens: int = 0  # virtual keys and values in every layer (prefix): an explicit mask
    head_trains: bool = False  # the loss's backward accumulates the head's fp32 weight gradient
    autograd_blocks: int | None = None
    """Without checkpointing, how many top blocks autograd records (None: all; the rest keep nothing)."""
    frozen_below: bool = False  # with autograd_blocks: those below keep a frozen block's tensors
    untracked_per_token: int = 0  # with autograd_blocks: bytes the lowest recorded block does not keep
    why: str = ""  # the reason of the activations line, with autograd_blocks


@dataclass(frozen=True)
class Imports:
    """What a method's emitted code imports (emit adds the quantization and trainer imports)."""

    peft: tuple[str, ...] = ()  # names imported from peft
    lines: tuple[str, ...] = ()  # whole import lines of other modules, after peft's
    ftc: tuple[str, ...] = ()  # ftc runtime import lines, among train.py's ftc imports


@dataclass(frozen=True)
class MethodPlan:
    """A method resolved for one model: every knob its code reads, each with its reason, decided
    once; the estimate and the emitter ask it, never the kind."""

    method: MethodBase
    settings: dict[str, Knob]

    def __getitem__(self, key: str) -> Any:
        return self.settings[key].value

    def get(self, key: str, default: Any = None) -> Any:
        return self.settings[key].value if key in self.settings else default

    @property
    def quantization(self) -> str | None:
        return self.method.quantization

    @property
    def trains_base_weights(self) -> bool:
        return self.method.trains_base_weights

    @property
    def rewrites_base_weights(self) -> bool:
        return self.method.rewrites_base_weights

    def trainable_parameters(self, d: Dims) -> int:
        return self.method.trainable_parameters(self, d)

    def largest_trainable_tensor(self, d: Dims) -> int:
        return self.method.largest_trainable_tensor(self, d)

    def activation_terms(self, d: Dims, e: int) -> ActivationTerms:
        return self.method.activation_terms(self, d, e)


class MethodBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True,
                              use_attribute_docstrings=True)

    template: ClassVar[str]
    """templates/methods/<template>.py.j2 emits the method section."""
    title: ClassVar[str]
    """What train.py's docstring calls the method."""
    default_learning_rate: ClassVar[float]
    """The peak learning rate at the width of a 7B model (hidden 4096) for width-scaled methods, else at any width."""
    width_scaled_lr: ClassVar[bool] = False
    """Whether the planned learning rate scales as 1/width (matrices trained with Adam; muP): LoRA family, full,
    freeze. Vectors and virtual tokens (IA3, prompts, adapters' gates) keep their default at any width."""
    trainer: ClassVar[Literal["sft", "hf"]] = "sft"
    """"sft": TRL's SFTTrainer; "hf": transformers' Trainer with a padding collator (PEFT's
    prompt-learning methods and LLaMA-Adapter, which SFTTrainer's batches break)."""
    mergeable: ClassVar[bool] = False
    """Whether `ftc merge` can fold the trained weights into the base."""
    peft: ClassVar[bool] = False
    """Whether the result is a PEFT adapter (reloaded with PeftModel.from_pretrained)."""
    checkpointing_ok: ClassVar[bool] = True
    """Whether training works with gradient checkpointing."""
    checkpointing_problem: ClassVar[str] = ""
    """Why not, when it does not (the message of a refused `gradient_checkpointing = true`)."""
    trains_base_weights: ClassVar[bool] = False
    """The trained weights are the model's own, in the load dtype (else PEFT's fp32 adapters)."""
    trains_in_load_dtype: ClassVar[bool] = False
    """The trained weights are in the load dtype: the model's own, or adapters PEFT does not cast to fp32."""
    rewrites_base_weights: ClassVar[bool] = False
    """The method replaces the base's linear weights after loading (the estimate's checkpoint buffer)."""
    fallbacks: ClassVar[tuple[str, ...]] = ("lora", "qlora")
    """Lighter kinds a does-not-fit message suggests (each only if its estimate fits)."""
    sharding_problem: ClassVar[str] = ""
    """Why the method cannot train with its weights sharded (`fsdp`, `zero3`); empty: it can."""
    own_optimizer: ClassVar[str | None] = None
    """The method's code builds `optimizer` itself; the comment beside handing it to the trainer."""
    peft_flags: ClassVar[dict[str, bool]] = {}
    """adapter_config.json flags this kind's PEFT config always has (an adapter it continues must have them too)."""
    save_template: ClassVar[str | None] = None
    """templates/methods/<save_template>.py.j2 saves the result (None: the trainer's save_model)."""
    CONFIG_NAMES: ClassVar[dict[str, str]] = {
        "double_quant": "DOUBLE_QUANT", "int8_threshold": "INT8_THRESHOLD", "modules": "TRAIN_MODULES",
        "head": "TRAIN_HEAD", "r": "LORA_R", "alpha": "LORA_ALPHA", "dropout": "LORA_DROPOUT",
        "target_modules": "TARGET_MODULES", "feedforward_modules": "FEEDFORWARD_MODULES", "svd_iters": "PISSA_SVD_ITERS",
        "ratio": "LORAPLUS_RATIO", "virtual_tokens": "VIRTUAL_TOKENS", "projection": "PREFIX_PROJECTION",
        "encoder": "PROMPT_ENCODER", "encoder_hidden_size": "ENCODER_HIDDEN_SIZE", "init_text": "PROMPT_INIT_TEXT",
        "adapter_len": "ADAPTER_LEN", "adapter_name": "ADAPTER_NAME",
    }
    """train.py's CONFIG name of each knob a method's code reads."""
    config_names: ClassVar[dict[str, str]] = {}
    """CONFIG names of this method's knobs whose key another method's knob shares (e.g. `layers`)."""

    @classmethod
    def config_name(cls, knob: str) -> str | None:
        return cls.config_names.get(knob, cls.CONFIG_NAMES.get(knob))

    @property
    def quantization(self) -> str | None:
        """bitsandbytes format of the frozen base: "nf4", "int8" or None."""
        value = getattr(self, "quantize", "none")
        return None if value == "none" else value

    @model_validator(mode="after")
    def _quantization_knobs_read(self) -> MethodBase:
        """double_quant is read only with nf4, int8_threshold only with int8: set otherwise, it is ignored."""
        for key, needs in _QUANTIZED_ONLY.items():
            if key in self.model_fields_set and self.quantization != needs:
                kind = self.kind  # type: ignore[attr-defined]
                loads = f"quantize = {self.quantization!r}" if self.quantization else "no quantization"
                settable = needs in get_args(type(self).model_fields["quantize"].annotation)  # qlora's is fixed
                fix = f"remove {key}" + (f" or set quantize = {needs!r}" if settable else "")
                raise KeyConflict(f"method.{key}", f"is read only with quantize = {needs!r}, but kind = {kind!r} "
                                  f"loads the base with {loads}, so it would be ignored; {fix}")
        return self

    # ---------------------------------------------------------------- resolve
    def resolve(self, config: dict[str, Any] | None) -> MethodPlan:
        """Every knob of the method that its code reads, with `"auto"` values and defaults that
        depend on the model decided here (config: config.json facts, None when unknown offline)."""
        s = {"quantization": Knob(self.quantization, "spec: method.quantize" if "quantize" in self.model_fields_set
                                  else f"derived: method.kind = {self.kind!r}"),  # type: ignore[attr-defined]
             "trainer": Knob(self.trainer, "derived: method.kind")}
        for key in type(self).model_fields:
            value = getattr(self, key)
            if key in ("kind", "quantize") or _QUANTIZED_ONLY.get(key, self.quantization) != self.quantization:
                continue
            if value is None:  # an optional knob left out is read by no code
                continue
            why = f"spec: method.{key}" if key in self.model_fields_set else "default"
            for name, knob in self._knob(key, value, why, config or {}).items():
                s.setdefault(name, knob)
        return MethodPlan(self, s)

    def _knob(self, key: str, value: Any, why: str, config: dict[str, Any]) -> dict[str, Knob]:
        """The resolved knob(s) of one field (a default `layers` count capped at the model's depth); methods
        override it for their model-dependent values."""
        return {key: capped_layers(value, why, config) if key == "layers" else Knob(value, why)}

    def alternatives(self) -> list[MethodBase]:
        """The lighter methods a does-not-fit message estimates (`fallbacks`, this one left out),
        each with the knobs the spec set here that it shares (rank, targets, dropout)."""
        from ftc.compiler.methods import METHODS  # the registry imports every method module

        def shared(target: type[MethodBase]) -> dict[str, Any]:  # not a knob read only with another quantization
            fixed = target.model_fields["quantize"].default if "quantize" in target.model_fields else "none"
            return {f: getattr(self, f) for f in self.model_fields_set if f in target.model_fields
                    and f not in ("kind", "quantize") and _QUANTIZED_ONLY.get(f, fixed) == fixed}

        return [METHODS[k].model_validate(shared(METHODS[k])) for k in self.fallbacks if type(self) is not METHODS[k]]

    # ---------------------------------------------------------------- estimate
    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        """Parameters the method trains (PEFT's own counts for its tuners, from their definitions)."""
        raise NotImplementedError(f"{type(self).__name__} counts no trainable parameters")

    def largest_trainable_tensor(self, plan: MethodPlan, d: Dims) -> int:
        """Elements of the largest trained tensor (the CPU AdamW loop allocates two of its size);
        small tuners: bounded by all their parameters."""
        return self.trainable_parameters(plan, d)

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """What the method changes in the activations; `e`: bytes per element of the hidden states."""
        return ActivationTerms()

    # ---------------------------------------------------------------- checks
    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        """The method's consistency problems against the spec and the model's facts."""
        if spec.train.gradient_checkpointing is True and not self.checkpointing_ok:
            yield "train.gradient_checkpointing", (f"kind = {self.kind!r} does not train with gradient "  # type: ignore[attr-defined]
                                                   f"checkpointing ({self.checkpointing_problem}); "
                                                   "set it to false or \"auto\"")
        yield from layers_problems(self, facts)

    # ---------------------------------------------------------------- emit
    @classmethod
    def imports(cls) -> Imports:
        """What the method's template calls besides transformers, the trainer and quantization."""
        return Imports()

    def update_scale(self) -> float | None:
        """The multiplier of the trained update (LoRA's alpha / r), which the planned learning rate divides out."""
        return None

    def load_dtype(self, precision: str) -> tuple[str, str] | None:
        """(dtype, why) when the method loads the weights in a dtype other than the precision's."""
        return None


def model_type(facts: Facts) -> str | None:
    """config.json's model_type, when the model's facts are known."""
    config = facts.model.config if facts.model else None
    return str(config.get("model_type")) if config and config.get("model_type") else None


def depth(config: dict[str, Any] | None) -> int | None:
    """The model's number of decoder blocks, when known."""
    value = config.get("num_hidden_layers") if config else None
    return value if isinstance(value, int) else None


def capped_layers(value: int, why: str, config: dict[str, Any]) -> Knob:
    """A default layer count, capped at the model's depth (an explicit one above it is refused)."""
    blocks = depth(config)
    if why == "default" and blocks is not None and value > blocks:
        return Knob(blocks, f"default: {value}, capped at the model's {blocks} blocks")
    return Knob(value, why)


def layers_problems(method: MethodBase, facts: Facts) -> Iterator[Finding]:
    """An explicit `layers` above the model's depth."""
    blocks, layers = depth(facts.model.config if facts.model else None), getattr(method, "layers", None)
    if blocks is not None and isinstance(layers, int) and layers > blocks and "layers" in method.model_fields_set:
        yield "method.layers", f"the model has {blocks} decoder blocks; method.layers must be at most {blocks} (got {layers})"


def module_list_problems(key: str, names: list[str], known: tuple[str, ...], model_type: str) -> Iterator[Finding]:
    """Names of an explicit module list that the architecture's blocks do not have."""
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            yield key, (f"{model_type} blocks have no linear layer named {name!r}; {hint}"
                        f"their linear layers are {', '.join(known)}")
