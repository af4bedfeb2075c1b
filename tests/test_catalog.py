"""The offline model and GPU catalog: well-formed entries whose shapes reproduce the published sizes."""

from __future__ import annotations

import pytest

from ftc.compiler.catalog_data import GPU_SPECS, MODEL_KEYS, MODELS, with_defaults

REQUIRED = ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings")
INT_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim",
            "query_pre_attn_scalar")


def param_count(config: dict[str, object]) -> int:
    """Decoder-only transformer parameters from config.json shapes: embeddings, per layer q/k/v/o
    (GQA, head_dim from the config or hidden/heads), a gated MLP (3·h·I), two norms, the final
    norm, and an output head unless tied. Biases (Qwen's qkv) and Gemma 2's extra norms are left
    out; both are well under 0.1 %. Phi-3's fused qkv_proj/gate_up_proj have the same count."""
    c = with_defaults(config)
    h, layers, vocab = int(c["hidden_size"]), int(c["num_hidden_layers"]), int(c["vocab_size"])  # type: ignore[call-overload]
    heads, kv, inter = int(c["num_attention_heads"]), int(c["num_key_value_heads"]), int(c["intermediate_size"])  # type: ignore[call-overload]
    head_dim = int(c.get("head_dim") or h // heads)  # type: ignore[call-overload]
    attention = 2 * h * heads * head_dim + 2 * h * kv * head_dim
    per_layer = attention + 3 * h * inter + 2 * h
    head = 0 if c["tie_word_embeddings"] else vocab * h
    return vocab * h + layers * per_layer + h + head


@pytest.mark.parametrize("hub_id", sorted(MODELS))
def test_entry_is_well_formed(hub_id: str) -> None:
    entry = MODELS[hub_id]
    assert "/" in hub_id and hub_id.count("/") == 1
    assert set(entry) <= set(MODEL_KEYS), set(entry) - set(MODEL_KEYS)
    for key in REQUIRED:
        assert key in entry, f"{hub_id}: missing {key}"
    for key in INT_KEYS:
        if key in entry:
            assert type(entry[key]) is int and entry[key] > 0, f"{hub_id}: {key}={entry[key]!r}"  # type: ignore[operator]
    assert isinstance(entry["model_type"], str) and entry["model_type"]
    archs = entry["architectures"]
    assert isinstance(archs, list) and len(archs) == 1 and str(archs[0]).endswith("ForCausalLM")
    assert type(with_defaults(entry)["tie_word_embeddings"]) is bool
    if entry.get("sliding_window") is not None:
        assert type(entry["sliding_window"]) is int
    heads, kv = entry["num_attention_heads"], entry["num_key_value_heads"]
    assert heads % kv == 0  # type: ignore[operator]
    if "head_dim" not in entry:
        assert entry["hidden_size"] % heads == 0  # type: ignore[operator]


def test_entries_are_independent_dicts() -> None:
    ids = {id(entry) for entry in MODELS.values()} | {id(entry["architectures"]) for entry in MODELS.values()}
    assert len(ids) == 2 * len(MODELS)


@pytest.mark.parametrize(("hub_id", "published"), [
    # the sizes the model cards state (or, where they round, the exact safetensors count)
    ("meta-llama/Llama-2-7b-hf", 6.74e9),
    ("meta-llama/Llama-2-13b-hf", 13.0e9),
    ("meta-llama/Llama-2-70b-hf", 69.0e9),
    ("meta-llama/Llama-3.1-8B", 8.03e9),
    ("meta-llama/Llama-3.1-70B-Instruct", 70.6e9),
    ("meta-llama/Llama-3.2-1B", 1.24e9),
    ("meta-llama/Llama-3.2-3B-Instruct", 3.21e9),
    ("mistralai/Mistral-7B-v0.1", 7.24e9),
    ("mistralai/Mistral-7B-Instruct-v0.3", 7.25e9),
    ("Qwen/Qwen2.5-0.5B", 0.494e9),
    ("Qwen/Qwen2.5-1.5B-Instruct", 1.54e9),
    ("Qwen/Qwen2.5-3B", 3.09e9),
    ("Qwen/Qwen2.5-7B", 7.62e9),
    ("Qwen/Qwen2.5-14B-Instruct", 14.7e9),
    ("Qwen/Qwen2.5-32B", 32.5e9),
    ("Qwen/Qwen2.5-72B-Instruct", 72.7e9),
    ("google/gemma-2-2b", 2.61e9),
    ("google/gemma-2-9b", 9.24e9),
    ("google/gemma-2-27b-it", 27.2e9),
    ("microsoft/Phi-3-mini-4k-instruct", 3.82e9),
    ("HuggingFaceTB/SmolLM2-135M", 0.135e9),
    ("HuggingFaceTB/SmolLM2-360M-Instruct", 0.362e9),
    ("HuggingFaceTB/SmolLM2-1.7B", 1.71e9),
])
def test_parameter_count_matches_published_size(hub_id: str, published: float) -> None:
    computed = param_count(MODELS[hub_id])
    assert abs(computed - published) / published < 0.05, f"{hub_id}: {computed:,} vs {published:,.0f}"


def test_tricky_facts() -> None:
    m = MODELS
    for hub_id in ("meta-llama/Meta-Llama-3-8B", "meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-1B"):
        assert m[hub_id]["vocab_size"] == 128256
    assert m["meta-llama/Llama-3.2-1B"]["tie_word_embeddings"] is True
    assert m["meta-llama/Llama-3.2-3B-Instruct"]["tie_word_embeddings"] is True
    assert m["meta-llama/Llama-3.1-8B"]["tie_word_embeddings"] is False
    for size, tied, vocab in (("0.5B", True, 151936), ("1.5B", True, 151936), ("3B", True, 151936),
                              ("7B", False, 152064), ("14B", False, 152064), ("32B", False, 152064),
                              ("72B", False, 152064)):
        for suffix in ("", "-Instruct"):
            entry = m[f"Qwen/Qwen2.5-{size}{suffix}"]
            assert (entry["tie_word_embeddings"], entry["vocab_size"]) == (tied, vocab), size
    for size, head_dim in (("2b", 256), ("9b", 256), ("27b", 128)):
        entry = m[f"google/gemma-2-{size}"]
        assert (entry["vocab_size"], entry["head_dim"]) == (256000, head_dim)
        assert "tie_word_embeddings" not in entry and with_defaults(entry)["tie_word_embeddings"] is True
    assert m["google/gemma-2-27b"]["query_pre_attn_scalar"] == 144
    phi = m["microsoft/Phi-3-mini-4k-instruct"]
    assert (phi["model_type"], phi["vocab_size"]) == ("phi3", 32064)
    assert m["microsoft/Phi-3-mini-128k-instruct"]["max_position_embeddings"] == 131072
    assert m["mistralai/Mistral-7B-Instruct-v0.3"]["vocab_size"] == 32768
    assert m["mistralai/Mistral-7B-v0.1"]["vocab_size"] == 32000
    for hub_id in m:
        if hub_id.startswith("HuggingFaceTB/SmolLM2-"):
            assert m[hub_id]["tie_word_embeddings"] is True


def test_smollm2_agrees_with_the_bundled_alias() -> None:
    from ftc.compiler.catalog import bundled_config

    assert bundled_config("smollm2-135m-instruct") is MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]


@pytest.mark.parametrize("name", list(GPU_SPECS))
def test_gpu_row(name: str) -> None:
    row = GPU_SPECS[name]
    assert set(row) == {"memory_gib", "bf16", "peak_tflops_bf16", "peak_tflops_fp16", "memory_bandwidth_gbs"}
    assert type(row["bf16"]) is bool
    for key in ("memory_gib", "peak_tflops_fp16", "memory_bandwidth_gbs", "peak_tflops_bf16"):
        assert isinstance(row[key], float), (name, key)
    assert 4 < row["memory_gib"] < 200  # type: ignore[operator]
    assert row["peak_tflops_fp16"] > 0 and row["memory_bandwidth_gbs"] > 0  # type: ignore[operator]
    # bf16 peak is positive exactly where the card has bf16 tensor cores (0.0 on Volta/Turing)
    assert (row["peak_tflops_bf16"] > 0) == row["bf16"]  # type: ignore[operator]


def test_gpu_rows_most_specific_first() -> None:
    names = list(GPU_SPECS)
    for earlier, later in (("H100 PCIe", "H100"), ("A100 80GB", "A100"), ("A100 40GB", "A100"),
                           ("V100 32GB", "V100"), ("V100 16GB", "V100"), ("A10G", "A10"),
                           ("L40S", "L40"), ("L40", "L4")):
        assert names.index(earlier) < names.index(later)
    # a row whose name contains an earlier row's words would never be reached
    for i, name in enumerate(names):
        for other in names[:i]:
            assert not set(other.split()) <= set(name.split()), (other, name)


def test_gpu_memory_below_marketed_size() -> None:
    for name, marketed in (("H100", 80), ("A100 80GB", 80), ("A100 40GB", 40), ("RTX 4090", 24),
                           ("T4", 16), ("H200", 141), ("V100 32GB", 32)):
        assert marketed * 0.9 < GPU_SPECS[name]["memory_gib"] < marketed  # type: ignore[operator]


@pytest.mark.parametrize("hub_id", sorted(MODELS))
def test_estimated_layers_are_the_architectures_own(hub_id: str) -> None:
    """The estimate names and sizes each block's linear layers as the architecture does, so the
    targets a method resolves (or a spec lists) are the layers it counts; their sum is the count
    of a block's linear weights whatever the naming (fused or not)."""
    from ftc.compiler.catalog import LINEAR_MODULES
    from ftc.compiler.estimate import dims

    config = with_defaults(MODELS[hub_id])
    d = dims(config)
    if config["model_type"] in LINEAR_MODULES:
        assert tuple(d.linears()) == LINEAR_MODULES[str(config["model_type"])]
    h, q, kv, inter = d.h, d.q_dim, d.kv_dim, d.inter
    assert sum(i * o for i, o in d.linears().values()) == 2 * h * q + 2 * h * kv + 3 * h * inter
