"""The spec: one pydantic model per TOML table. This file is the user-facing contract.

Every field's docstring is its documentation (docs/spec.md is written from the same words).
Shape only: consistency with the model and the data is checked in `checks.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ftc.compiler.limits import (LIST_ITEMS, MAX_BATCH, MAX_EPOCHS, MAX_SEED, MAX_STEPS, MAX_VRAM_GB, Name,
                                 PathText, Revision, Text)
from ftc.compiler.methods import KeyConflict, Method

Format = Literal["chat", "instruction", "completion", "text", "preference"]

# Fields of each data format, required ones first. `[data.columns]` maps these to dataset columns.
FORMAT_FIELDS: dict[str, tuple[str, ...]] = {"chat": ("messages", "system", "role", "content"),
                                             "instruction": ("instruction", "output", "input", "system"),
                                             "completion": ("prompt", "completion"), "text": ("text",),
                                             "preference": ("prompt", "chosen", "rejected", "completion", "label",
                                                            "system")}
# Fields that name keys inside each turn of a conversation, not dataset columns.
TURN_FIELDS = ("role", "content")
# Variables a `data.template` may use, per format.
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {"instruction": ("instruction", "input", "system"),
                                               "completion": ("prompt",)}
Metric = Literal["loss", "perplexity", "exact_match", "accuracy", "bleu", "chrf", "rouge"]
Tracker = Literal["tensorboard", "mlflow", "wandb", "trackio"]
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {"chat": ("messages",), "instruction": ("instruction", "output"),
                                               "completion": ("prompt", "completion"), "text": ("text",),
                                               "preference": ("prompt",)}
Objective = Literal["sft", "dpo", "orpo", "kto", "simpo"]
# Each preference objective's beta when train.beta is left out (TRL's defaults; SimPO's from its paper).
DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1, "kto": 0.1, "simpo": 2.0}
# The objectives that compare the policy with a reference model (ORPO and SimPO need none).
REFERENCE_OBJECTIVES = ("dpo", "kto")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True,
                              use_attribute_docstrings=True)
    """strict: a TOML value of the wrong type is refused, never coerced (`"8"` is not 8, `1` not true);
    an integer is still accepted where a float is expected."""


class ModelSpec(_Table):
    """`[model]`: which base model to fine-tune."""

    base: PathText
    """A hub id (`org/name`), a local directory with config.json, or a bundled alias
    (`smollm2-135m-instruct`)."""
    revision: Revision | None = None
    """Hub revision (branch, tag or commit) for hub ids."""
    trust_remote_code: bool = False
    """Allow the model's own Python code to run. Off unless you trust its authors."""
    adapter: PathText | None = None
    """Continue training a PEFT adapter instead of starting a new one: a run directory (its final/
    adapter) or an adapter folder (adapter_config.json and its weights). Checked at compile time
    against model.base, the quantization it was trained on (from the run's plan.json) and the
    method's settings (kind, rank, targets...). LoRA kinds, IA3 and LLaMA-Adapter; not prompt
    kinds (PEFT loads those frozen only)."""


class CleanSpec(_Table):
    """`[data.clean]`: rows removed before training; every one is counted and written, with its
    reason, to data/dropped.jsonl in the compiled (ftc data) or run directory (train.py)."""

    dedup: bool = True
    """Drop exact duplicates (the same example after column mapping); the first one is kept."""
    near_dedup: float | None = Field(None, ge=0.5, le=1.0)
    """Drop near duplicates: examples whose character 5-gram Jaccard similarity to an earlier one
    is at least this (e.g. 0.85), found with MinHash and confirmed exactly. Off by default."""
    min_tokens: int = Field(0, ge=0)
    """Drop examples shorter than this many tokens."""
    max_tokens: int | None = Field(None, gt=0)
    """Drop (instead of truncating) examples longer than this many tokens."""
    untrained: Literal["error", "drop"] = "error"
    """Examples with no trained token (an empty or truncated-away answer): stop with their rows
    (`error`), or drop them and report them (`drop`)."""


class MixSpec(_Table):
    """`[[data.mix]]`: another source mixed into the training data, in the same format and columns."""

    source: PathText
    """A file, glob, saved dataset directory or hub id, like data.source."""
    weight: float = Field(1.0, gt=0, le=100)
    """How many times each of its training rows is used per epoch: 2 = twice, 0.5 = a seeded half
    (data.source has weight 1). Applied after cleaning and the validation split, so repeated rows
    are never counted as duplicates nor leak into validation."""


class DataSpec(_Table):
    """`[data]`: where the examples are and how their columns map onto a format."""

    source: PathText
    """A .jsonl/.json/.csv/.parquet/.txt file (a .txt file is one `text` row per line), a glob of
    them, a directory saved by `datasets`, or a hub dataset id. Relative paths are resolved from
    the directory ftc runs in."""
    mix: list[MixSpec] = Field(default_factory=list, max_length=LIST_ITEMS)
    """More sources mixed in with weights (see [[data.mix]])."""
    format: Format
    """`chat` (messages), `instruction` (instruction/input/output), `completion`
    (prompt/completion), `text` (raw text, every token trained) or `preference` (prompt/chosen/rejected
    for train.objective dpo, orpo or simpo; prompt/completion/label, or pairs, for kto). A preference
    prompt is text or a list of chat turns; chosen and rejected are text or one assistant turn."""
    columns: dict[Name, Name] = Field(default_factory=dict, max_length=LIST_ITEMS)
    """Format field = dataset column, for fields whose column has another name. A dotted name
    reaches into nested objects (`prompt = "meta.question"`). For chat data, `role` and `content`
    name the keys inside each turn (default: role/content, or ShareGPT's from/value, detected per
    turn), and `system` a column holding a system prompt."""
    roles: dict[Name, Literal["system", "user", "assistant"]] = Field(default_factory=dict, max_length=LIST_ITEMS)
    """Role names of the data = the role they play, added to the built-in ones (human and user ->
    user; gpt, assistant, bot, model, chatgpt -> assistant; system). An unmapped role stops the run."""
    train_on: Literal["answers", "last_answer", "inputs_too"] = "answers"
    """Which tokens are trained: every assistant turn with its end-of-turn token (`answers`), only
    the last assistant turn (`last_answer`), or every turn after the system prompt, user turns and
    template markup included (`inputs_too`). System prompts are never trained."""
    template: Text | None = None
    """A Jinja prompt template for instruction or completion data, used instead of the chat
    template: the rendered prompt is masked, the answer and EOS are trained. Variables: the format's
    fields, e.g. "### Instruction:\n{{ instruction }}\n\n### Response:\n"."""
    clean: CleanSpec = CleanSpec()
    """Duplicate removal and length filters (see [data.clean])."""
    packing: bool = False
    """Pack several examples into each max_length row (best-fit decreasing, padding-free, each
    example attends only to itself); saves the padding that `ftc data` reports."""
    padding_free: bool = False
    """Without packing: concatenate each micro-batch into one row with no padding (positions
    restart at every example, so each attends only to itself); saves the padding `ftc data`
    reports. Not for methods with virtual tokens (prefix or prompt tuning)."""
    validation: float | PathText = 0.1
    """Share of the rows held out for validation (0 to 0.5), or a second source."""
    max_length: Annotated[int, Field(gt=8, le=1_048_576)] | Literal["auto"] = 1024
    """Longest example in tokens; longer ones are truncated (and counted). `"auto"`: the longest
    example measured at compile time with the model's tokenizer, rounded up to a multiple of 8
    (needs the tokenizer on this machine)."""
    split: Name = "train"
    """Split to read from a hub dataset or a saved DatasetDict."""

    @model_validator(mode="after")
    def _validation_range(self) -> DataSpec:
        if isinstance(self.validation, float) and not 0 <= self.validation <= 0.5:
            raise ValueError(f"data.validation must be a fraction between 0 and 0.5 or a path (got {self.validation})")
        return self


class TrainSpec(_Table):
    """`[train]`: the optimisation. Left-out values are chosen by the planner."""

    epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS)
    """Passes over the training rows. Left out (and no max_steps): planned, 3 or more so a small data set gets
    at least 50 optimizer steps, 1 from 20,000 rows (plan.md gives the reason)."""
    max_steps: int | None = Field(None, gt=0, le=MAX_STEPS)
    """Optimizer steps, instead of epochs (setting both is an error)."""
    learning_rate: Annotated[float, Field(gt=0, lt=1)] | Literal["auto"] | None = None
    """Peak learning rate. Left out: planned from the method's 7B rate (2e-4 for LoRA, 2e-5 for full) times
    4096 / the model's hidden size for methods that train matrices, divided by LoRA's alpha / r over 2.
    `"auto"`: measured at compile time by a short learning-rate range test (Smith 2015) on the first
    batches, around that planned rate; cached, and stated in plan.md with the curve."""
    batch_size: int = Field(16, gt=0, le=MAX_BATCH)
    """Effective batch: examples per optimizer step over all devices. Left out: planned from the training rows
    (a power of two from 4 to 32, about 24 steps per epoch); a value given here is never changed."""
    micro_batch_size: Annotated[int, Field(gt=0, le=MAX_BATCH)] | Literal["auto"] = "auto"
    """Examples per forward pass on one device; the rest is gradient accumulation."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass to save memory (slower)."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup (left out: cosine)."""
    warmup: float = Field(0.05, ge=0, lt=1)
    """Share of the steps spent warming the learning rate up (seeds: 5 to 10 %). Left out: 5 %, at least 3
    steps of a short run, 10 % at most."""
    weight_decay: float = Field(0.0, ge=0, lt=1)
    """AdamW weight decay (seeds: 1e-4 to 1e-2 for full fine-tuning)."""
    max_grad_norm: float = Field(1.0, gt=0, le=1e6)
    """Gradient clipping norm."""
    seed: int = Field(42, ge=0, le=MAX_SEED)
    """Seed for data order, initialisation of adapters and dropout."""
    logging_steps: Annotated[int, Field(gt=0, le=MAX_STEPS)] | Literal["auto"] = "auto"
    """Log (and emit a step event) every N optimizer steps."""
    save_steps: Annotated[int, Field(gt=0, le=MAX_STEPS)] | Literal["auto"] = "auto"
    """Write a resumable checkpoint every N optimizer steps (auto: about 5 per run)."""
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    """Checkpoints kept on disk: the last N, plus the best by validation loss."""
    on_nan: Literal["skip", "rollback", "stop"] = "rollback"
    """What a step with NaN/inf gradients does: `skip` skips it and stops with a diagnosis after
    nan_patience in a row; `rollback` also skips, then after nan_patience in a row goes back to the last
    good checkpoint with half the learning rate (twice at most) before stopping; `stop` stops at once."""
    nan_patience: int = Field(3, ge=1, le=1000)
    """NaN/inf steps in a row that `skip` and `rollback` tolerate."""
    early_stopping_patience: int | None = Field(None, ge=1, le=MAX_STEPS)
    """Stop when the validation loss has not improved for this many evaluations (off by default;
    needs validation data)."""
    objective: Objective = "sft"
    """What is optimised: `sft` (the answers' likelihood), or a preference objective on
    `format = "preference"` data: `dpo` (Direct Preference Optimization, against a reference model),
    `orpo` (odds-ratio preference plus SFT on the chosen answer, no reference), `kto` (Kahneman-Tversky,
    unpaired good/bad answers, against a reference) or `simpo` (length-normalised margin, no reference)."""
    beta: float | None = Field(None, gt=0, le=100)
    """Preference strength (default: 0.1 for dpo, orpo and kto; 2.0 for simpo). DPO/KTO: how far the
    policy may move from the reference; ORPO: the weight of the odds-ratio term (lambda)."""
    dpo_loss: Literal["sigmoid", "ipo", "hinge", "robust"] = "sigmoid"
    """The DPO loss variant (train.objective = "dpo"): the paper's `sigmoid`, `ipo`, `hinge` (SLiC) or
    `robust` (label noise)."""
    simpo_gamma: float = Field(0.5, ge=0, le=100)
    """SimPO's target reward margin (train.objective = "simpo")."""
    reference: Literal["auto", "copy", "precomputed"] = "auto"
    """The reference model of dpo and kto: `auto` (adapter methods: the adapter as training starts, frozen,
    no copy; full training: a frozen copy), `copy` (a frozen copy in memory) or `precomputed` (the
    reference log-probabilities computed once before training; no second model while training)."""
    report_to: list[Tracker] = []
    """Experiment trackers the Trainer also logs to (TensorBoard event files in RUN_DIR/tensorboard,
    MLflow, Weights & Biases, Trackio); each needs its extra, e.g. `pip install 'ftc[tensorboard]'`."""

    @model_validator(mode="after")
    def _no_ignored_keys(self) -> TrainSpec:
        if self.max_steps is not None and "epochs" in self.model_fields_set:
            raise KeyConflict("train.epochs", "is ignored because train.max_steps is set (it overrides epochs); "
                              "remove one of them")
        if self.on_nan == "stop" and "nan_patience" in self.model_fields_set:
            raise KeyConflict("train.nan_patience", "is read by on_nan = \"skip\" or \"rollback\", but "
                              "train.on_nan = \"stop\" stops at the first NaN, so it would be ignored; remove one")
        if self.scheduler == "constant" and "warmup" in self.model_fields_set and self.warmup:
            raise KeyConflict("train.warmup", "is ignored by train.scheduler = \"constant\" (transformers' constant "
                              "schedule has no warmup); use scheduler = \"linear\" or \"cosine\", or remove warmup")
        if conflict := _objective_conflict(self):
            raise KeyConflict(*conflict)
        return self


def _objective_conflict(train: TrainSpec) -> tuple[str, str] | None:
    """A preference key that the chosen objective ignores."""
    used = {"beta": ("dpo", "orpo", "kto", "simpo"), "dpo_loss": ("dpo",), "simpo_gamma": ("simpo",),
            "reference": REFERENCE_OBJECTIVES}
    for key, objectives in used.items():
        if key in train.model_fields_set and train.objective not in objectives:
            return (f"train.{key}", f"is read by train.objective = {' or '.join(map(repr, objectives))}, but "
                    f"train.objective = {train.objective!r} ignores it; remove it or change the objective")
    return None


class HardwareSpec(_Table):
    """`[hardware]`: what the run must fit."""

    device: Literal["cuda", "cpu"] = "cuda"
    """Where training runs."""
    gpu: Name | None = None
    """A GPU name from the catalog (e.g. "RTX 4090", "A100 80GB"); sets vram_gb and bf16 support."""
    vram_gb: float | None = Field(None, gt=0, le=MAX_VRAM_GB)
    """Memory budget per device in GiB; on `cpu` the RAM to stay under."""
    devices: int = Field(1, ge=1, le=64)
    """Devices per node, one training process each (on `cpu`: processes talking over gloo)."""
    nodes: int = Field(1, ge=1, le=64)
    """Machines, each with `devices` devices; the world size is devices x nodes."""
    strategy: Literal["auto", "ddp", "fsdp", "zero2", "zero3"] = "auto"
    """How several devices share the work: `ddp` copies the model to every device; `zero2` (DeepSpeed)
    shards gradients and optimizer states; `fsdp` (FSDP2) and `zero3` (DeepSpeed) also shard the weights;
    auto picks the cheapest that fits the per-device budget (one device: none)."""
    offload: Literal["none", "optimizer", "all"] = "none"
    """What moves to host RAM to fit: `optimizer` (ZeRO-2/3: optimizer states and their fp32 copies) or
    `all` (ZeRO-3 and FSDP: the weights too); slower, since the host computes or streams them."""
    cpu_ram_gb: float | None = Field(None, gt=0)
    """Host RAM per node in GiB, to check the estimated peak there: while the model loads (every process
    builds it whole, except under ZeRO-3's zero.Init) and while training (what offload moves there; on `cpu`
    the processes themselves). Unchecked when left out."""
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """Compute precision; auto picks bf16 where the GPU supports it, fp16 otherwise; on CPU bf16 where the
    CPU multiplies it natively (AMX, AVX-512 BF16) and the base is frozen, fp32 otherwise."""
    attention: Literal["auto", "sdpa", "flash_attention_2", "eager"] = "auto"
    """The attention kernel (transformers' attn_implementation); auto picks `flash_attention_2` on cuda where
    the flash-attn package is installed, the GPU is Ampere or newer, the precision bf16/fp16 and the model
    supports it, `sdpa` (PyTorch's scaled dot product attention) otherwise."""
    liger: bool | Literal["auto"] = "auto"
    """Liger's Triton kernels for the norms, rotary embeddings and MLP (liger-kernel); auto turns them on for
    SFT on cuda where the package is installed and supports the model type."""

    @model_validator(mode="before")
    @classmethod
    def _devices_not_gpus(cls, data: object) -> object:
        if isinstance(data, dict) and "gpus" in data:
            raise ValueError(f"hardware.gpus is now hardware.devices (devices per node): write devices = "
                             f"{data['gpus']!r} instead of gpus = {data['gpus']!r}")
        return data

    @property
    def world(self) -> int:
        """Training processes in all: devices x nodes."""
        return self.devices * self.nodes


class EvalSpec(_Table):
    """`[eval]`: checks around training."""

    compare: int = Field(0, ge=0, le=1000)
    """Generate answers for this many validation examples before and after training and print
    them side by side with the exact-match rate (0 = off; not for `text` data)."""
    max_new_tokens: int = Field(64, gt=0, le=4096)
    """Generation length for `compare`."""
    metrics: list[Metric] = []
    """Measured on the validation split before training (the base) and after (the tuned model), written to
    RUN_DIR/eval.json and a `metrics` event: `loss` and `perplexity` on every validation example; `exact_match`,
    `accuracy` (the first line, case and punctuation ignored), `bleu`, `chrf` and `rouge` (ROUGE-1/2/L F1) on
    the answers to the first `compare` examples, generated greedily up to max_new_tokens (default:
    ["exact_match"] when compare is set). bleu, chrf and rouge need `pip install 'ftc[metrics]'`."""
    fail_if_worse: list[Metric] = []
    """The regression gate: the run fails (exit 1, after saving final/ and eval.json) when any of these metrics
    is worse after training than before; each must be measured (in metrics)."""
    steps: Annotated[int, Field(gt=0, le=MAX_STEPS)] | Literal["auto"] = "auto"
    """Validation loss every N optimizer steps (auto: about 5 times per run)."""

    @model_validator(mode="after")
    def _generation_needs_compare(self) -> EvalSpec:
        if "max_new_tokens" in self.model_fields_set and not self.compare:
            raise KeyConflict("eval.max_new_tokens", "is the answer length of eval.compare, which is 0 (off), so "
                              "it would be ignored; set compare = N examples or remove max_new_tokens")
        return self


class Spec(_Table):
    """A whole ftc spec file."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    """Run name: the compiled and run folders are named after it (default: the spec file's stem)."""
    model: ModelSpec
    data: DataSpec
    method: Method
    train: TrainSpec = TrainSpec()
    hardware: HardwareSpec = HardwareSpec()
    eval: EvalSpec = EvalSpec()

    @model_validator(mode="after")
    def _early_stopping_needs_validation(self) -> Spec:
        if self.train.early_stopping_patience is not None and self.data.validation == 0:
            raise ValueError("train.early_stopping_patience needs validation data: set data.validation "
                             "(e.g. 0.1) or leave early_stopping_patience out")
        return self
