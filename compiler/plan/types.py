"""The typed Plan: one frozen dataclass per section, each field a `Setting` (value, why) whose
`meta` says where it goes — its CONFIG name in train.py, whether a resumed run may change it, and
whether the monitor shows it. emit, the resume policy (`Plan.resumable`) and the monitor (plan.json's
`key_settings`) read this metadata instead of keeping lists of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ftc.core.data.settings import DataSettings

if TYPE_CHECKING:
    from ftc.compiler.estimate import Memory

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """A resolved value and where it came from (the comment beside it in train.py)."""

    value: T
    why: str


@dataclass(frozen=True)
class Meta:
    """Where a setting goes besides plan.json."""

    config: str | None = None
    """Its name in train.py's CONFIG block (None: the script does not read it)."""
    resumable: bool = False
    """A resumed run may change it: it alters no remaining step's computation (the micro-batch split
    keeps the effective batch) or only what is reported."""
    key: tuple[int, str] | None = None
    """(rank, label) among the settings the monitor shows first; rank 1 is shown first."""
    when: Callable[[Plan], bool] | None = None
    """CONFIG holds it only when this is true of the plan (a value this plan's code never reads stays out)."""
    stage: str | None = None
    """The DataSettings field it is (train.py passes it to the data stage)."""


def meta(config: str | None = None, *, resumable: bool = False, key: tuple[int, str] | None = None,
         when: Callable[[Plan], bool] | None = None, stage: str | None = None, default: Any = ...) -> Any:
    """A section field with its metadata (and a default, for settings only some plans have)."""
    metadata = {"ftc": Meta(config, resumable, key, when, stage)}
    return field(metadata=metadata) if default is ... else field(default=default, metadata=metadata)


def _is_set(name: str, unset: object) -> Callable[[Plan], bool]:
    """CONFIG holds `name` only when it differs from `unset` (the value that means "not used")."""
    return lambda plan: plan[name] != unset


def _source_kind(*kinds: str) -> Callable[[Plan], bool]:
    return lambda plan: plan.data.data_kind.value in kinds


@dataclass(frozen=True, kw_only=True)
class ModelPlan:
    """The base model."""

    base_model: Setting[str] = meta("BASE_MODEL")
    revision: Setting[str | None] = meta("REVISION")
    trust_remote_code: Setting[bool] = meta("TRUST_REMOTE_CODE")
    adapter: Setting[str] | None = meta("ADAPTER", default=None)
    """The adapter folder the method continues (`model.adapter`), when one is given."""


@dataclass(frozen=True, kw_only=True)
class DataPlan:
    """Where the rows come from and how they become examples. `settings` is the data stage's
    DataSettings, the very object `ftc data` runs and train.py rebuilds from CONFIG; the Settings
    below hold its values with their reasons."""

    settings: DataSettings

    data_source: Setting[str] = meta("DATA_SOURCE", when=_source_kind("saved", "hub"))
    data_kind: Setting[str] = meta()
    data_loader: Setting[str | None] = meta("DATA_LOADER", when=_source_kind("files"))
    data_files: Setting[str] = meta("DATA_FILES", when=_source_kind("files"))
    mix: Setting[list[dict[str, Any]]] = meta("MIX", when=_is_set("mix", []))
    data_format: Setting[str] = meta("DATA_FORMAT", key=(17, "data"), stage="format")
    columns: Setting[dict[str, str]] = meta("COLUMNS", stage="columns")
    optional_fields: Setting[list[str]] = meta()
    data_split: Setting[str] = meta("DATA_SPLIT", when=_source_kind("saved", "hub"))
    validation: Setting[float | str] = meta("VALIDATION", stage="validation")
    validation_loader: Setting[str | None] | None = meta("VALIDATION_LOADER", default=None)
    max_length: Setting[int] = meta("MAX_LENGTH", key=(13, "max length"), stage="max_length")
    roles: Setting[dict[str, str]] = meta("ROLES", stage="roles")
    train_on: Setting[str] = meta("TRAIN_ON", stage="train_on")
    template: Setting[str | None] = meta("PROMPT_TEMPLATE", stage="template")
    dedup: Setting[bool] = meta("DEDUP", stage="dedup")
    near_dedup: Setting[float | None] = meta("NEAR_DEDUP", stage="near_dedup")
    min_tokens: Setting[int] = meta("MIN_TOKENS", stage="min_tokens")
    max_tokens: Setting[int | None] = meta("MAX_TOKENS", stage="max_tokens")
    untrained: Setting[str] = meta("UNTRAINED", stage="untrained")
    packing: Setting[bool] = meta("PACKING")
    padding_free: Setting[bool] = meta("PADDING_FREE", when=_is_set("padding_free", False))


@dataclass(frozen=True, kw_only=True)
class MethodSection:
    """The method and every knob its code reads, resolved once (auto targets, layer caps)."""

    method: Setting[str] = meta(key=(1, "method"))
    quantization: Setting[str | None] = meta(key=(11, "quantization"))
    trainer: Setting[str] = meta()
    knobs: dict[str, Setting[Any]] = field(default_factory=dict)
    """The method's own settings, in its order; their CONFIG names are the method's (`config_names`)."""
    config_names: dict[str, str] = field(default_factory=dict)


KNOB_KEYS = {"r": (9, "r"), "alpha": (10, "alpha")}
"""Method knobs the monitor shows (LoRA's rank and scale)."""


@dataclass(frozen=True, kw_only=True)
class HardwarePlan:
    """The device, precision and memory budget."""

    device: Setting[str] = meta(key=(16, "device"))
    # a resumed run may change these where the checkpoint allows (cli/launch.py world_change)
    devices: Setting[int] = meta(resumable=True)
    nodes: Setting[int] = meta(resumable=True)
    strategy: Setting[str] = meta("STRATEGY", resumable=True, when=_is_set("strategy", "single"))
    offload: Setting[str] = meta("OFFLOAD", resumable=True, when=_is_set("offload", "none"))
    fsdp_layer: Setting[str | None] = meta("FSDP_LAYER", when=_is_set("fsdp_layer", None), default=None)
    quant_storage: Setting[str | None] = meta("QUANT_STORAGE", when=_is_set("quant_storage", None), default=None)
    precision: Setting[str] = meta("PRECISION", key=(6, "precision"))
    load_dtype: Setting[str] = meta("LOAD_DTYPE")
    lm_head: Setting[str] = meta("LM_HEAD", when=_is_set("lm_head", "trainer"),
                                 default=Setting("trainer", "default: the trainer's own loss head"))
    """SFTTrainer's loss head: "trainer" (TRL's fused head) or "kept-positions" (compiler/plan/lmhead.py)."""
    attention: Setting[str] = meta("ATTENTION", when=_is_set("attention", "sdpa"),
                                   default=Setting("sdpa", "default: PyTorch's scaled dot product attention"))
    """transformers' attn_implementation (compiler/plan/kernels.py); CONFIG holds it when it is not the default."""
    liger: Setting[bool] = meta("LIGER_KERNEL", when=_is_set("liger", False), default=Setting(False, "default: off"))
    """Liger's layer kernels (TrainingArguments.use_liger_kernel; compiler/plan/kernels.py)."""
    budget_gib: Setting[float | None] = meta(resumable=True)


@dataclass(frozen=True, kw_only=True)
class OptimPlan:
    """How long and how fast: steps, batch split, optimizer and schedule."""

    learning_rate: Setting[float] = meta("LEARNING_RATE", key=(2, "lr"))
    epochs: Setting[float | None] = meta("EPOCHS", key=(8, "epochs"), when=_is_set("epochs", None))
    max_steps: Setting[int] = meta("MAX_STEPS", when=_is_set("max_steps", -1))
    batch_size: Setting[int] = meta("BATCH_SIZE", key=(3, "batch"))
    micro_batch_size: Setting[int] = meta("MICRO_BATCH_SIZE", resumable=True, key=(4, "micro-batch"))
    grad_accum: Setting[int] = meta("GRAD_ACCUM", resumable=True, key=(5, "accumulation"))
    gradient_checkpointing: Setting[bool] = meta("GRADIENT_CHECKPOINTING", resumable=True, key=(12, "grad ckpt"))
    optimizer: Setting[str] = meta("OPTIMIZER", key=(15, "optimizer"))
    scheduler: Setting[str] = meta("SCHEDULER", key=(14, "schedule"))
    warmup: Setting[float] = meta("WARMUP")
    weight_decay: Setting[float] = meta("WEIGHT_DECAY")
    max_grad_norm: Setting[float] = meta("MAX_GRAD_NORM")
    seed: Setting[int] = meta("SEED", stage="seed")
    total_steps: Setting[int | None] = meta(key=(7, "steps"))


def _preference(plan: Plan) -> bool:
    return plan.objective.objective.value != "sft"


@dataclass(frozen=True, kw_only=True)
class ObjectivePlan:
    """What the trainer optimises: SFT, or a preference objective with its knobs (CONFIG holds them only then)."""

    objective: Setting[str] = meta("OBJECTIVE", key=(18, "objective"), when=_preference)
    beta: Setting[float | None] = meta("BETA", when=_preference)
    loss_variant: Setting[str | None] = meta("LOSS_TYPE", when=_is_set("loss_variant", None))
    simpo_gamma: Setting[float | None] = meta("SIMPO_GAMMA", when=_is_set("simpo_gamma", None))
    reference: Setting[str | None] = meta("REFERENCE", when=_is_set("reference", None))


@dataclass(frozen=True, kw_only=True)
class RunPolicy:
    """What the run reports and keeps, and how it reacts to trouble; a resumed run may change these."""

    logging_steps: Setting[int] = meta("LOGGING_STEPS", resumable=True)
    eval_steps: Setting[int | None] = meta("EVAL_STEPS", resumable=True, when=_is_set("eval_steps", None))
    save_steps: Setting[int] = meta("SAVE_STEPS", resumable=True)
    keep_checkpoints: Setting[int] = meta("KEEP_CHECKPOINTS", resumable=True)
    on_nan: Setting[str] = meta("ON_NAN", resumable=True)
    nan_patience: Setting[int] = meta("NAN_PATIENCE", resumable=True)
    early_stopping_patience: Setting[int | None] = meta("EARLY_STOPPING_PATIENCE", resumable=True,
                                                        when=_is_set("early_stopping_patience", None))
    compare: Setting[int] = meta("COMPARE", resumable=True, when=_is_set("compare", 0))
    max_new_tokens: Setting[int] = meta("MAX_NEW_TOKENS", resumable=True, when=_is_set("compare", 0))
    metrics: Setting[list[str]] = meta("METRICS", resumable=True, when=_is_set("metrics", []), default=Setting([], ""))
    fail_if_worse: Setting[list[str]] = meta("FAIL_IF_WORSE", resumable=True, when=_is_set("fail_if_worse", []),
                                             default=Setting([], ""))
    report_to: Setting[list[str]] = meta("REPORT_TO", resumable=True,
                                         when=_is_set("report_to", []), default=Setting([], ""))


SECTIONS = ("model", "data", "method", "hardware", "optim", "objective", "run")


@dataclass(frozen=True)
class Entry:
    """One setting with its place: section, plan.json key, metadata."""

    section: str
    key: str
    setting: Setting[Any]
    meta: Meta


@dataclass(frozen=True)
class Plan:
    """Every value the emitted script needs, resolved, with provenance and reasons."""

    name: str
    template: str
    model: ModelPlan
    data: DataPlan
    method: MethodSection
    hardware: HardwarePlan
    optim: OptimPlan
    run: RunPolicy
    objective: ObjectivePlan
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    memory: Memory | None = None
    budget_bytes: int | None = None
    by_strategy: tuple[tuple[str, Memory], ...] = ()
    """Several devices: the per-device estimate of each strategy the spec may use, at the chosen batch split."""

    @property
    def kind(self) -> str:
        """method.kind."""
        return self.method.method.value

    def entries(self) -> Iterator[Entry]:
        """Every setting in reading order: section by section, fields in their declared order."""
        for section in SECTIONS:
            part = getattr(self, section)
            for f in fields(part):
                value = getattr(part, f.name)
                if isinstance(value, Setting):
                    yield Entry(section, f.name, value, f.metadata["ftc"])
            if isinstance(part, MethodSection):
                for key, value in part.knobs.items():
                    yield Entry(section, key, value, Meta(part.config_names.get(key), key=KNOB_KEYS.get(key)))

    @cached_property
    def settings(self) -> dict[str, Setting[Any]]:
        """The flat view plan.json keeps: key -> Setting."""
        return {e.key: e.setting for e in self.entries()}

    def __getitem__(self, key: str) -> Any:
        return self.settings[key].value

    def config_entries(self) -> list[Entry]:
        """The settings train.py's CONFIG block holds, in order."""
        return [e for e in self.entries() if e.meta.config and (e.meta.when is None or e.meta.when(self))]

    def resumable(self) -> frozenset[str]:
        """plan.json keys a resumed run may change."""
        return frozenset(e.key for e in self.entries() if e.meta.resumable)

    def to_json(self) -> dict[str, Any]:
        entries = list(self.entries())
        keyed = sorted((e.meta.key, e.key) for e in entries if e.meta.key)
        return {
            "name": self.name,
            "method": self.kind,
            "settings": {e.key: e.setting.value for e in entries},
            "memory": self.memory.as_dict() if self.memory else None,
            "budget": self.budget_bytes,
            "provenance": {e.key: e.setting.why for e in entries},
            "key_settings": {key: label for (_, label), key in keyed},
            "reasons": list(self.reasons),
            "notes": list(self.notes),
        }
