"""Offline facts about well-known base models and GPUs, so that planning needs no download.

`MODELS` maps a Hugging Face hub id to the architecture keys of that model's `config.json`, with
the values exactly as the hub's file has them (a key is left out only where the real file lacks
it, e.g. `head_dim` outside Gemma 2 / Llama 3.2, and `tie_word_embeddings` in Gemma 2's files).
Base and instruct checkpoints are separate keys; they share architecture values, but not always
`max_position_embeddings` (the Qwen2.5 instruct files say 32768 where some base files say 131072).

`GPU_SPECS` maps a GPU name to its usable memory, bf16 support and vendor peak figures. Rows are
ordered most specific first ("H100 PCIe" before "H100", "A100 80GB" before "A100"), because a
name is matched by its first row whose key it contains.

Pure data, standard library only: no torch, no network.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------

# Keys each entry carries (when the model's config.json has them).
MODEL_KEYS: tuple[str, ...] = (
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "vocab_size",
    "tie_word_embeddings",
    "max_position_embeddings",
    "query_pre_attn_scalar",
    "sliding_window",
)

# What transformers assumes when a config.json omits a key (the config class's default), for the
# model types in this catalog whose files omit one. Gemma2Config(tie_word_embeddings=True): the
# Gemma 2 files do not spell it out, and the output head *is* the embedding matrix.
MODEL_TYPE_DEFAULTS: dict[str, dict[str, object]] = {
    "gemma2": {"tie_word_embeddings": True},
    "llama": {"tie_word_embeddings": False},
    "mistral": {"tie_word_embeddings": False},
    "qwen2": {"tie_word_embeddings": False},
    "phi3": {"tie_word_embeddings": False},
}


def with_defaults(config: dict[str, object]) -> dict[str, object]:
    """`config` with the transformers defaults of its model_type filled in where a key is absent
    (so a Gemma 2 entry reads as tied, as transformers builds it)."""
    defaults = MODEL_TYPE_DEFAULTS.get(str(config.get("model_type")), {})
    return {**defaults, **config}


def _variant(base: dict[str, object], **changes: object) -> dict[str, object]:
    """A copy of `base` with `changes` applied (entries never share a mutable dict)."""
    return {**base, "architectures": list(base["architectures"]), **changes}  # type: ignore[call-overload]


# --- Llama 2 --------------------------------------------------------------------------------------
# The Llama 2 files (transformers 4.31/4.32) spell out num_key_value_heads and
# tie_word_embeddings=false.
_LLAMA2_7B: dict[str, object] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}
_LLAMA2_13B = _variant(_LLAMA2_7B, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                       num_attention_heads=40, num_key_value_heads=40)
_LLAMA2_70B = _variant(_LLAMA2_7B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8)

# --- Llama 3 / 3.1 / 3.2 --------------------------------------------------------------------------
_LLAMA3_8B: dict[str, object] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
}
_LLAMA3_70B = _variant(_LLAMA3_8B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64)
# Llama 3.1: same shapes, 128K context (rope_scaling llama3, factor 8); no head_dim key (4.43.0.dev0).
_LLAMA31_8B = _variant(_LLAMA3_8B, max_position_embeddings=131072)
_LLAMA31_70B = _variant(_LLAMA3_70B, max_position_embeddings=131072)
# Llama 3.2 files (4.45.0.dev0) carry head_dim, and tie the output head to the embeddings.
_LLAMA32_1B = _variant(_LLAMA3_8B, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       head_dim=64, tie_word_embeddings=True, max_position_embeddings=131072)
_LLAMA32_3B = _variant(_LLAMA3_8B, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                       num_attention_heads=24, head_dim=128, tie_word_embeddings=True,
                       max_position_embeddings=131072)

# --- Mistral 7B -----------------------------------------------------------------------------------
_MISTRAL_7B_V01: dict[str, object] = {
    "model_type": "mistral",
    "architectures": ["MistralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "max_position_embeddings": 32768,
    "sliding_window": 4096,
}
# v0.2 instruct: rope_theta 1e6 and sliding_window null (full attention over 32K).
_MISTRAL_7B_V02 = _variant(_MISTRAL_7B_V01, sliding_window=None)
# v0.3: the vocabulary grows to 32768 (v3 tokenizer with control tokens); no head_dim key.
_MISTRAL_7B_V03 = _variant(_MISTRAL_7B_V01, vocab_size=32768, sliding_window=None)

# --- Qwen2.5 --------------------------------------------------------------------------------------
# 0.5B/1.5B/3B share the 151936-row embedding with the output head; 7B and up have an untied head
# over 152064 rows. Instruct files say max_position_embeddings 32768; base files vary.
_QWEN25_0_5B: dict[str, object] = {
    "model_type": "qwen2",
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "max_position_embeddings": 32768,
}
_QWEN25_1_5B = _variant(_QWEN25_0_5B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                        num_attention_heads=12)
_QWEN25_3B = _variant(_QWEN25_0_5B, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                      num_attention_heads=16)
_QWEN25_7B = _variant(_QWEN25_0_5B, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                      num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                      tie_word_embeddings=False)
_QWEN25_14B = _variant(_QWEN25_7B, hidden_size=5120, intermediate_size=13824, num_hidden_layers=48,
                       num_attention_heads=40, num_key_value_heads=8)
_QWEN25_32B = _variant(_QWEN25_7B, hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                       num_attention_heads=40, num_key_value_heads=8)
_QWEN25_72B = _variant(_QWEN25_7B, hidden_size=8192, intermediate_size=29568, num_hidden_layers=80,
                       num_attention_heads=64, num_key_value_heads=8)

# --- Gemma 2 --------------------------------------------------------------------------------------
# head_dim is not hidden/heads (2304/8 = 288, 3584/16 = 224, 4608/32 = 144). The files have no
# tie_word_embeddings key: Gemma2Config defaults it to True (see MODEL_TYPE_DEFAULTS).
_GEMMA2_2B: dict[str, object] = {
    "model_type": "gemma2",
    "architectures": ["Gemma2ForCausalLM"],
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "vocab_size": 256000,
    "max_position_embeddings": 8192,
    "query_pre_attn_scalar": 256,
    "sliding_window": 4096,
}
_GEMMA2_9B = _variant(_GEMMA2_2B, hidden_size=3584, intermediate_size=14336, num_hidden_layers=42,
                      num_attention_heads=16, num_key_value_heads=8)
_GEMMA2_27B = _variant(_GEMMA2_2B, hidden_size=4608, intermediate_size=36864, num_hidden_layers=46,
                       num_attention_heads=32, num_key_value_heads=16, head_dim=128,
                       query_pre_attn_scalar=144)

# --- Phi-3-mini -----------------------------------------------------------------------------------
# Fused projections: self_attn.qkv_proj (out = (heads + 2*kv) * head_dim) and mlp.gate_up_proj
# (out = 2 * intermediate); same parameter count as separate q/k/v and gate/up.
_PHI3_MINI_4K: dict[str, object] = {
    "model_type": "phi3",
    "architectures": ["Phi3ForCausalLM"],
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
    "tie_word_embeddings": False,
    "max_position_embeddings": 4096,
}
# 128k: longrope rope_scaling over original_max_position_embeddings 4096.
_PHI3_MINI_128K = _variant(_PHI3_MINI_4K, max_position_embeddings=131072)

# --- SmolLM2 --------------------------------------------------------------------------------------
_SMOLLM2_135M: dict[str, object] = {
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
}
_SMOLLM2_360M = _variant(_SMOLLM2_135M, hidden_size=960, intermediate_size=2560, num_hidden_layers=32,
                         num_attention_heads=15, num_key_value_heads=5)
_SMOLLM2_1_7B = _variant(_SMOLLM2_135M, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32)


MODELS: dict[str, dict[str, object]] = {
    # Source for each group: the hub repo's config.json (huggingface.co/<id>/blob/main/config.json);
    # "checked against" names the public copy of that file the values were compared with.

    # meta-llama/Llama-2-7b-hf config.json (from memory of the hub file; shapes match the published
    # 6.74B count exactly)
    "meta-llama/Llama-2-7b-hf": _variant(_LLAMA2_7B),
    # meta-llama/Llama-2-7b-chat-hf config.json (same architecture as the base)
    "meta-llama/Llama-2-7b-chat-hf": _variant(_LLAMA2_7B),
    # meta-llama/Llama-2-13b-hf config.json
    "meta-llama/Llama-2-13b-hf": _variant(_LLAMA2_13B),
    # meta-llama/Llama-2-13b-chat-hf config.json
    "meta-llama/Llama-2-13b-chat-hf": _variant(_LLAMA2_13B),
    # meta-llama/Llama-2-70b-hf config.json (GQA: 8 KV heads)
    "meta-llama/Llama-2-70b-hf": _variant(_LLAMA2_70B),
    # meta-llama/Llama-2-70b-chat-hf config.json
    "meta-llama/Llama-2-70b-chat-hf": _variant(_LLAMA2_70B),

    # meta-llama/Meta-Llama-3-8B config.json (checked against a verbatim copy of the
    # Meta-Llama-3-8B-Instruct file in a public GitHub repo)
    "meta-llama/Meta-Llama-3-8B": _variant(_LLAMA3_8B),
    # meta-llama/Meta-Llama-3-8B-Instruct config.json (same as above)
    "meta-llama/Meta-Llama-3-8B-Instruct": _variant(_LLAMA3_8B),
    # meta-llama/Meta-Llama-3-70B config.json
    "meta-llama/Meta-Llama-3-70B": _variant(_LLAMA3_70B),
    # meta-llama/Meta-Llama-3-70B-Instruct config.json
    "meta-llama/Meta-Llama-3-70B-Instruct": _variant(_LLAMA3_70B),

    # meta-llama/Llama-3.1-8B config.json (checked against a verbatim copy in
    # citsjtu2020/LLM-Prof sglang/Model_Config.md)
    "meta-llama/Llama-3.1-8B": _variant(_LLAMA31_8B),
    # meta-llama/Llama-3.1-8B-Instruct config.json (same architecture)
    "meta-llama/Llama-3.1-8B-Instruct": _variant(_LLAMA31_8B),
    # meta-llama/Llama-3.1-70B config.json (oumi configs/recipes/llama3_1/README.md agrees)
    "meta-llama/Llama-3.1-70B": _variant(_LLAMA31_70B),
    # meta-llama/Llama-3.1-70B-Instruct config.json
    "meta-llama/Llama-3.1-70B-Instruct": _variant(_LLAMA31_70B),
    # The hub's earlier names for the same four repos (they redirect to the Llama-3.1-* ids).
    "meta-llama/Meta-Llama-3.1-8B": _variant(_LLAMA31_8B),
    "meta-llama/Meta-Llama-3.1-8B-Instruct": _variant(_LLAMA31_8B),
    "meta-llama/Meta-Llama-3.1-70B": _variant(_LLAMA31_70B),
    "meta-llama/Meta-Llama-3.1-70B-Instruct": _variant(_LLAMA31_70B),

    # meta-llama/Llama-3.2-1B config.json (checked against a copy of the Llama-3.2-1B-Instruct
    # file in kevinstephano/thunder_model_blocks hf_llama/llama_config.py)
    "meta-llama/Llama-3.2-1B": _variant(_LLAMA32_1B),
    # meta-llama/Llama-3.2-1B-Instruct config.json (same)
    "meta-llama/Llama-3.2-1B-Instruct": _variant(_LLAMA32_1B),
    # meta-llama/Llama-3.2-3B config.json (checked against citsjtu2020/LLM-Prof
    # sglang/Model_Config.md)
    "meta-llama/Llama-3.2-3B": _variant(_LLAMA32_3B),
    # meta-llama/Llama-3.2-3B-Instruct config.json (same)
    "meta-llama/Llama-3.2-3B-Instruct": _variant(_LLAMA32_3B),

    # mistralai/Mistral-7B-v0.1 config.json (sliding_window 4096, rope_theta 1e4)
    "mistralai/Mistral-7B-v0.1": _variant(_MISTRAL_7B_V01),
    # mistralai/Mistral-7B-Instruct-v0.1 config.json (same as the base)
    "mistralai/Mistral-7B-Instruct-v0.1": _variant(_MISTRAL_7B_V01),
    # mistralai/Mistral-7B-Instruct-v0.2 config.json (sliding_window null, rope_theta 1e6)
    "mistralai/Mistral-7B-Instruct-v0.2": _variant(_MISTRAL_7B_V02),
    # mistralai/Mistral-7B-v0.3 config.json (same architecture as the instruct file below)
    "mistralai/Mistral-7B-v0.3": _variant(_MISTRAL_7B_V03),
    # mistralai/Mistral-7B-Instruct-v0.3 config.json (checked against verbatim copies in several
    # public repos: vocab_size 32768, sliding_window null, no head_dim)
    "mistralai/Mistral-7B-Instruct-v0.3": _variant(_MISTRAL_7B_V03),

    # Qwen/Qwen2.5-0.5B config.json (checked against a verbatim copy: max_position_embeddings 32768)
    "Qwen/Qwen2.5-0.5B": _variant(_QWEN25_0_5B),
    # Qwen/Qwen2.5-0.5B-Instruct config.json (checked against verbatim copies)
    "Qwen/Qwen2.5-0.5B-Instruct": _variant(_QWEN25_0_5B),
    # Qwen/Qwen2.5-1.5B config.json (max_position_embeddings 131072 from memory of the hub file;
    # not found in a public copy)
    "Qwen/Qwen2.5-1.5B": _variant(_QWEN25_1_5B, max_position_embeddings=131072),
    # Qwen/Qwen2.5-1.5B-Instruct config.json (checked against verbatim copies)
    "Qwen/Qwen2.5-1.5B-Instruct": _variant(_QWEN25_1_5B),
    # Qwen/Qwen2.5-3B config.json (checked against citsjtu2020/LLM-Prof sglang/Model_Config.md)
    "Qwen/Qwen2.5-3B": _variant(_QWEN25_3B),
    # Qwen/Qwen2.5-3B-Instruct config.json (checked against verbatim copies)
    "Qwen/Qwen2.5-3B-Instruct": _variant(_QWEN25_3B),
    # Qwen/Qwen2.5-7B config.json (checked against citsjtu2020/LLM-Prof sglang/Model_Config.md)
    "Qwen/Qwen2.5-7B": _variant(_QWEN25_7B, max_position_embeddings=131072),
    # Qwen/Qwen2.5-7B-Instruct config.json (checked against verbatim copies)
    "Qwen/Qwen2.5-7B-Instruct": _variant(_QWEN25_7B),
    # Qwen/Qwen2.5-14B config.json (checked against citsjtu2020/LLM-Prof sglang/Model_Config.md)
    "Qwen/Qwen2.5-14B": _variant(_QWEN25_14B, max_position_embeddings=131072),
    # Qwen/Qwen2.5-14B-Instruct config.json (32768 like the other instruct files)
    "Qwen/Qwen2.5-14B-Instruct": _variant(_QWEN25_14B),
    # Qwen/Qwen2.5-32B config.json (checked against citsjtu2020/LLM-Prof sglang/Model_Config.md)
    "Qwen/Qwen2.5-32B": _variant(_QWEN25_32B, max_position_embeddings=131072),
    # Qwen/Qwen2.5-32B-Instruct config.json (checked against verbatim copies)
    "Qwen/Qwen2.5-32B-Instruct": _variant(_QWEN25_32B),
    # Qwen/Qwen2.5-72B config.json (max_position_embeddings 131072 from memory of the hub file)
    "Qwen/Qwen2.5-72B": _variant(_QWEN25_72B, max_position_embeddings=131072),
    # Qwen/Qwen2.5-72B-Instruct config.json (checked against a verbatim copy)
    "Qwen/Qwen2.5-72B-Instruct": _variant(_QWEN25_72B),

    # google/gemma-2-2b config.json (checked against a verbatim copy with _name_or_path
    # google/gemma-2-2b, transformers 4.44.2)
    "google/gemma-2-2b": _variant(_GEMMA2_2B),
    # google/gemma-2-2b-it config.json (same architecture)
    "google/gemma-2-2b-it": _variant(_GEMMA2_2B),
    # google/gemma-2-9b config.json (checked against verbatim copies, transformers 4.42.0.dev0)
    "google/gemma-2-9b": _variant(_GEMMA2_9B),
    # google/gemma-2-9b-it config.json (same)
    "google/gemma-2-9b-it": _variant(_GEMMA2_9B),
    # google/gemma-2-27b config.json (checked against copies; query_pre_attn_scalar 144 = 4608/32)
    "google/gemma-2-27b": _variant(_GEMMA2_27B),
    # google/gemma-2-27b-it config.json (same)
    "google/gemma-2-27b-it": _variant(_GEMMA2_27B),

    # microsoft/Phi-3-mini-4k-instruct config.json (keras-hub phi3_presets lists 3,821,079,552
    # parameters, which these shapes reproduce exactly)
    "microsoft/Phi-3-mini-4k-instruct": _variant(_PHI3_MINI_4K),
    # microsoft/Phi-3-mini-128k-instruct config.json
    "microsoft/Phi-3-mini-128k-instruct": _variant(_PHI3_MINI_128K),

    # HuggingFaceTB/SmolLM2-135M config.json (also bundled: compiler/catalog.py, checked against
    # the converted cache)
    "HuggingFaceTB/SmolLM2-135M": _variant(_SMOLLM2_135M),
    # HuggingFaceTB/SmolLM2-135M-Instruct config.json
    "HuggingFaceTB/SmolLM2-135M-Instruct": _variant(_SMOLLM2_135M),
    # HuggingFaceTB/SmolLM2-360M config.json
    "HuggingFaceTB/SmolLM2-360M": _variant(_SMOLLM2_360M),
    # HuggingFaceTB/SmolLM2-360M-Instruct config.json
    "HuggingFaceTB/SmolLM2-360M-Instruct": _variant(_SMOLLM2_360M),
    # HuggingFaceTB/SmolLM2-1.7B config.json
    "HuggingFaceTB/SmolLM2-1.7B": _variant(_SMOLLM2_1_7B),
    # HuggingFaceTB/SmolLM2-1.7B-Instruct config.json (checked against a verbatim copy)
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": _variant(_SMOLLM2_1_7B),
}


# ------------------------------------------------------------------------------------------------
# GPUs
# ------------------------------------------------------------------------------------------------
#
# memory_gib: what torch.cuda.get_device_properties(i).total_memory / 2**30 reports, approximately
#   (+-0.1 GiB; it varies a little with driver and ECC). It is less than the marketed size: an
#   "80GB" H100 reports ~79.1 GiB, a "24GB" RTX 4090 ~23.6 GiB. Where marked "seen", the figure
#   is the "GPU 0 has a total capacity of X GiB" that PyTorch prints in out-of-memory errors on
#   that card; otherwise it is the marketed size less the same reserve as its siblings.
# bf16: bfloat16 tensor cores (Ampere, sm_80, and newer). Volta and Turing have none:
#   peak_tflops_bf16 is 0.0 there (use fp16).
# peak_tflops_*: dense tensor-core peak, no 2:4 sparsity (datasheets print the sparse figure
#   with an asterisk; dense is half of it). For GeForce cards the figure is the FP32-accumulate
#   rate, which is what PyTorch's fp16/bf16 matmuls use; the datasheet's FP16-accumulate figure is
#   twice that. Data-center and workstation cards run both at the same rate.
# memory_bandwidth_gbs: GB/s (10**9 bytes/s), from the same datasheet.

GPU_SPECS: dict[str, dict[str, object]] = {
    # NVIDIA H200 datasheet (SXM): 141 GB HBM3e, 4.8 TB/s, BF16/FP16 1,979 TFLOPS sparse -> 989.4
    # dense. Memory seen: 139.80 GiB.
    "H200": {"memory_gib": 139.8, "bf16": True, "peak_tflops_bf16": 989.4,
             "peak_tflops_fp16": 989.4, "memory_bandwidth_gbs": 4800.0},
    # NVIDIA H100 datasheet (PCIe): 80 GB HBM2e, 2 TB/s, BF16/FP16 1,513 TFLOPS sparse -> 756.5.
    "H100 PCIe": {"memory_gib": 79.2, "bf16": True, "peak_tflops_bf16": 756.5,
                  "peak_tflops_fp16": 756.5, "memory_bandwidth_gbs": 2000.0},
    # NVIDIA H100 datasheet (SXM5, the default "H100"): 80 GB HBM3, 3.35 TB/s, BF16/FP16 1,979
    # TFLOPS sparse -> 989.4 dense (Hopper whitepaper). Memory seen: ~79.1 GiB.
    "H100": {"memory_gib": 79.1, "bf16": True, "peak_tflops_bf16": 989.4,
             "peak_tflops_fp16": 989.4, "memory_bandwidth_gbs": 3350.0},
    # NVIDIA A100 datasheet (80GB SXM4): 2,039 GB/s (PCIe 80GB: 1,935), BF16/FP16 312 dense.
    # Memory seen: 79.15-79.25 GiB.
    "A100 80GB": {"memory_gib": 79.2, "bf16": True, "peak_tflops_bf16": 312.0,
                  "peak_tflops_fp16": 312.0, "memory_bandwidth_gbs": 2039.0},
    # NVIDIA A100 datasheet (40GB): 1,555 GB/s, BF16/FP16 312 dense. Memory seen: 39.4-39.5 GiB.
    "A100 40GB": {"memory_gib": 39.4, "bf16": True, "peak_tflops_bf16": 312.0,
                  "peak_tflops_fp16": 312.0, "memory_bandwidth_gbs": 1555.0},
    # "A100" without a size: the 40GB row (the smaller, so a plan that fits is never optimistic).
    "A100": {"memory_gib": 39.4, "bf16": True, "peak_tflops_bf16": 312.0,
             "peak_tflops_fp16": 312.0, "memory_bandwidth_gbs": 1555.0},
    # NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, BF16/FP16 362.05 dense (733 sparse).
    # Memory seen: 44.39-44.40 GiB.
    "L40S": {"memory_gib": 44.4, "bf16": True, "peak_tflops_bf16": 362.05,
             "peak_tflops_fp16": 362.05, "memory_bandwidth_gbs": 864.0},
    # NVIDIA L40 datasheet: 48 GB GDDR6, 864 GB/s, BF16/FP16 181.05 dense (362.1 sparse).
    "L40": {"memory_gib": 44.4, "bf16": True, "peak_tflops_bf16": 181.05,
            "peak_tflops_fp16": 181.05, "memory_bandwidth_gbs": 864.0},
    # NVIDIA L4 datasheet: 24 GB GDDR6, 300 GB/s, BF16/FP16 242 sparse -> 121 dense.
    # Memory seen: ~22.05 GiB.
    "L4": {"memory_gib": 22.05, "bf16": True, "peak_tflops_bf16": 121.0,
           "peak_tflops_fp16": 121.0, "memory_bandwidth_gbs": 300.0},
    # A10G (AWS G5 only; NVIDIA publishes no datasheet): 24 GB GDDR6, 600 GB/s (as the A10); its
    # tensor rate is about 70 dense TFLOPS, as commonly quoted (e.g. Baseten's "A10 vs A10G").
    # Unverified against a vendor document. Memory seen: ~22.0-22.1 GiB.
    "A10G": {"memory_gib": 22.1, "bf16": True, "peak_tflops_bf16": 70.0,
             "peak_tflops_fp16": 70.0, "memory_bandwidth_gbs": 600.0},
    # NVIDIA A10 datasheet: 24 GB GDDR6, 600 GB/s, BF16/FP16 125 dense (250 sparse).
    "A10": {"memory_gib": 22.1, "bf16": True, "peak_tflops_bf16": 125.0,
            "peak_tflops_fp16": 125.0, "memory_bandwidth_gbs": 600.0},
    # NVIDIA RTX A6000 datasheet: 48 GB GDDR6, 768 GB/s, tensor 309.7 sparse -> 154.8 dense.
    # Memory: ~47.5 GiB.
    "A6000": {"memory_gib": 47.5, "bf16": True, "peak_tflops_bf16": 154.8,
              "peak_tflops_fp16": 154.8, "memory_bandwidth_gbs": 768.0},
    # NVIDIA Ada Lovelace whitepaper (RTX 4090): 24 GB GDDR6X, 1,008 GB/s, FP16/BF16 tensor with
    # FP32 accumulate 165.2 dense (330.3 with FP16 accumulate). Memory seen: 23.64-23.68 GiB.
    "RTX 4090": {"memory_gib": 23.6, "bf16": True, "peak_tflops_bf16": 165.2,
                 "peak_tflops_fp16": 165.2, "memory_bandwidth_gbs": 1008.0},
    # NVIDIA Ada Lovelace whitepaper (RTX 4080 16GB): 716.8 GB/s, FP32-accumulate tensor 97.5
    # dense (194.9 with FP16 accumulate).
    "RTX 4080": {"memory_gib": 15.7, "bf16": True, "peak_tflops_bf16": 97.5,
                 "peak_tflops_fp16": 97.5, "memory_bandwidth_gbs": 716.8},
    # NVIDIA Ampere GA102 whitepaper (RTX 3090): 24 GB GDDR6X, 936 GB/s, FP32-accumulate tensor
    # 71 dense (142 with FP16 accumulate). Memory: ~23.7 GiB.
    "RTX 3090": {"memory_gib": 23.7, "bf16": True, "peak_tflops_bf16": 71.0,
                 "peak_tflops_fp16": 71.0, "memory_bandwidth_gbs": 936.0},
    # NVIDIA Ampere GA102 whitepaper (RTX 3080, 10 GB): 760 GB/s, FP32-accumulate tensor 59.5
    # dense (119 with FP16 accumulate). The later 12 GB card is not this row.
    "RTX 3080": {"memory_gib": 9.8, "bf16": True, "peak_tflops_bf16": 59.5,
                 "peak_tflops_fp16": 59.5, "memory_bandwidth_gbs": 760.0},
    # NVIDIA V100 datasheet (SXM2 32GB): 900 GB/s, FP16 tensor 125 (PCIe: 112). No bf16.
    # Memory seen: 31.75 GiB.
    "V100 32GB": {"memory_gib": 31.7, "bf16": False, "peak_tflops_bf16": 0.0,
                  "peak_tflops_fp16": 125.0, "memory_bandwidth_gbs": 900.0},
    # NVIDIA V100 datasheet (SXM2 16GB): 900 GB/s, FP16 tensor 125 (PCIe: 112). No bf16.
    # Memory seen: ~15.77 GiB.
    "V100 16GB": {"memory_gib": 15.8, "bf16": False, "peak_tflops_bf16": 0.0,
                  "peak_tflops_fp16": 125.0, "memory_bandwidth_gbs": 900.0},
    # "V100" without a size: the 16GB row.
    "V100": {"memory_gib": 15.8, "bf16": False, "peak_tflops_bf16": 0.0,
             "peak_tflops_fp16": 125.0, "memory_bandwidth_gbs": 900.0},
    # NVIDIA T4 datasheet: 16 GB GDDR6, 320 GB/s, FP16 mixed-precision tensor 65. No bf16.
    # Memory seen: 14.75 GiB (Colab).
    "T4": {"memory_gib": 14.75, "bf16": False, "peak_tflops_bf16": 0.0,
           "peak_tflops_fp16": 65.0, "memory_bandwidth_gbs": 320.0},
}
