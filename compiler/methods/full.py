"""Methods that train the model's own weights: all of them (`full`), or chosen ones (`freeze`,
and its preset `linear_probe`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.estimate import parameter_counts
from ftc.compiler.limits import LIST_ITEMS, Name
from ftc.compiler.methods.base import (ActivationTerms, Finding, Imports, KeyConflict, MethodBase, MethodPlan,
                                       model_type)

if TYPE_CHECKING:
    from ftc.compiler.checks import Facts
    from ftc.compiler.estimate import Dims
    from ftc.compiler.spec import Spec

_MLP = ("gate_proj", "up_proj", "down_proj", "gate_up_proj")


def block_paths(linears: tuple[str, ...]) -> list[str]:
    """Module paths inside one decoder block, as `freeze` patterns match them."""
    return [f"{'mlp' if n in _MLP else 'self_attn'}.{n}" for n in linears] + ["input_layernorm",
                                                                               "post_attention_layernorm"]


class Full(MethodBase):
    """`kind = "full"`: update every weight of the model. Needs the most memory (weights,
    gradients and two AdamW states for every parameter)."""

    kind: Literal["full"] = "full"
    """Method selector."""

    template: ClassVar[str] = "full"
    title: ClassVar[str] = "full fine-tuning (every weight)"
    default_learning_rate: ClassVar[float] = 2e-5
    width_scaled_lr: ClassVar[bool] = True
    """Seeds: full fine-tuning uses 1e-5 to 1e-4."""
    trains_base_weights: ClassVar[bool] = True
    trains_in_load_dtype: ClassVar[bool] = True

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        return sum(parameter_counts(d).values())

    def largest_trainable_tensor(self, plan: MethodPlan, d: Dims) -> int:
        return d.vocab * d.h  # the embedding matrix

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        return ActivationTerms(keeps_linear_inputs=True, final_norm_trained=True, head_trains=True)

    def load_dtype(self, precision: str) -> tuple[str, str] | None:
        if precision == "fp16":
            return "float32", "derived: fp16 mixed precision keeps fp32 master weights"
        if precision == "bf16":
            return "bfloat16", "derived: pure bf16 weights and AdamW states (half the memory of mixed precision)"
        return None


class Freeze(MethodBase):
    """`kind = "freeze"`: freeze the model except the last `layers` decoder blocks (all of their
    weights, or only those whose names contain one of `modules`), and optionally the output head."""

    kind: Literal["freeze"] = "freeze"
    """Method selector."""
    layers: int = Field(2, ge=0, le=10_000)
    """How many of the last decoder blocks are trained (0: none, e.g. with `head = true`)."""
    modules: list[Name] = Field(default_factory=list, max_length=LIST_ITEMS)
    """Train only the weights of those blocks whose names contain one of these, e.g.
    `["self_attn"]` (attention only) or `["mlp"]`; empty: the whole block."""
    head: bool = False
    """Also train the output head (lm_head). With tied embeddings this trains the input
    embeddings too (they are the same tensor)."""

    template: ClassVar[str] = "freeze"
    title: ClassVar[str] = "partial fine-tuning (chosen layers; the rest frozen)"
    default_learning_rate: ClassVar[float] = 5e-5
    width_scaled_lr: ClassVar[bool] = True
    """Seeds: partial tuning uses a full fine-tuning rate, slightly higher since fewer weights move."""

    trains_base_weights: ClassVar[bool] = True
    trains_in_load_dtype: ClassVar[bool] = True
    config_names: ClassVar[dict[str, str]] = {"layers": "TRAIN_LAYERS"}

    @model_validator(mode="after")
    def _trains_something(self) -> Freeze:
        if self.layers == 0 and not self.head:
            raise ValueError("method.layers = 0 with head = false trains nothing; train some blocks or the head")
        if self.layers == 0 and self.modules:
            raise KeyConflict("method.modules", "chooses weights inside the trained blocks, but method.layers = 0 "
                              "trains none, so it would be ignored; remove modules or set layers")
        return self

    def trainable_parameters(self, plan: MethodPlan, d: Dims) -> int:
        sizes = {f"{path}.weight": size for path, size in zip(block_paths(tuple(d.linears())),
                                                              [i * o for i, o in d.linears().values()] + [d.h, d.h])}
        patterns = plan["modules"]
        per_block = sum(n for name, n in sizes.items() if not patterns or any(p in name for p in patterns))
        counts = parameter_counts(d)
        head = (counts["head"] or counts["embed"]) if plan["head"] else 0  # tied: the embedding matrix
        return plan["layers"] * per_block + head

    def largest_trainable_tensor(self, plan: MethodPlan, d: Dims) -> int:
        return d.vocab * d.h if plan["head"] else max(i * o for i, o in d.linears().values())

    def activation_terms(self, plan: MethodPlan, d: Dims, e: int) -> ActivationTerms:
        """Blocks below the first trained one run without autograd, so nothing of theirs is kept,
        unless the embedding output requires grad: with checkpointing (transformers 5's
        activation_checkpointing_enable calls enable_input_require_grads, so every block is
        checkpointed and keeps its input) or when the trained head is tied to the input embeddings
        (the frozen blocks below then keep a frozen block's tensors). Measured: benchmarks/README.md,
        freeze and linear_probe rows."""
        trained, tied = plan["layers"], plan["head"] and d.tied
        why = (f"activations: {trained} trained blocks, the {d.layers - trained} frozen ones below (the tied head "
               "trains the embeddings)" if tied else f"activations: the {trained} trained blocks only")
        return ActivationTerms(keeps_linear_inputs=True, head_trains=plan["head"], autograd_blocks=trained,
                               frozen_below=tied, why=why)

    def checks(self, spec: Spec, facts: Facts) -> Iterator[Finding]:
        yield from super().checks(spec, facts)
        arch = model_type(facts)
        known = LINEAR_MODULES.get(arch) if arch else None
        if known and self.modules:
            paths = block_paths(known)
            for pattern in self.modules:
                if not any(pattern in path for path in paths):
                    yield "method.modules", (f"{pattern!r} matches no weight of a {arch} block; names look like "
                                             f"{', '.join(paths)} (a pattern matches any name containing it)")

    @classmethod
    def imports(cls) -> Imports:
        return Imports(ftc=("from ftc.runtime.methods import freeze_except",))


class LinearProbe(Freeze):
    """`kind = "linear_probe"`: the `freeze` preset that trains the output head only."""

    kind: Literal["linear_probe"] = "linear_probe"  # type: ignore[assignment]
    """Method selector."""
    layers: Literal[0] = 0  # type: ignore[assignment]
    """Fixed: no decoder block is trained."""
    modules: list[str] = Field(default_factory=list, max_length=0)
    """Fixed: empty."""
    head: Literal[True] = True  # type: ignore[assignment]
    """Fixed: the head is what trains."""

    title: ClassVar[str] = "linear probing (the output head only)"
    default_learning_rate: ClassVar[float] = 1e-3
    width_scaled_lr: ClassVar[bool] = False  # the head alone: its default at any width
    """A single linear layer tolerates a high rate."""
