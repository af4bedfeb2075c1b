"""Peak memory of one training step of the emitted script, component by component (pure, no torch).

The model is a decoder-only transformer as Hugging Face builds it (Llama, Mistral, Qwen2, Gemma 2,
Phi-3: RMSNorm, rotary embeddings, GQA attention through SDPA, SwiGLU MLP). Each activation term
below names the tensors autograd keeps for the backward pass; they were read off the modules'
forward code (transformers 5.23 `modeling_llama.py`, `integrations/sdpa_attention.py`, peft 0.21
`tuners/lora/layer.py`, bitsandbytes 0.50) and checked against measured peaks
(benchmarks/memory.py, results in benchmarks/README.md).

Units: every `*_bytes` value is in bytes; `T` is tokens per micro-batch (micro_batch x seq_len).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ftc.compiler.catalog import LINEAR_MODULES
from ftc.compiler.catalog_data import with_defaults
from ftc.compiler.estimate_logits import logits_bytes
from ftc.compiler.estimate_shard import Footprint, Loading, Parallel, loading, shard

if TYPE_CHECKING:  # the methods import this module's shapes; the estimate only asks their plans
    from ftc.compiler.methods.base import ActivationTerms, MethodPlan

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# CUDA context + cuBLAS/cuDNN workspaces, outside PyTorch's allocator: ~300-600 MiB depending on
# the driver and GPU (PyTorch docs "CUDA memory management"; MEMORY.md pitfall 1). NVML sees it.
CUDA_CONTEXT_BYTES = 512 * 2**20

# bitsandbytes NF4 (functional.quantize_4bit, blocksize 64): 4 bits per weight = 0.5 B, plus one
# fp32 absmax per 64 weights (0.0625 B), or with double quantization an int8 absmax per 64 weights
# plus an fp32 scale per 256 blocks (QLoRA paper §3: 0.127 bit instead of 0.5 bit).
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
NF4_DQ_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)
# LLM.int8 (Linear8bitLt, has_fp16_weights=False): int8 weight plus one fp32 scale per output row.
INT8_BYTES_PER_PARAM = 1.0

# bitsandbytes LLM.int8 state kept per input feature and token (measured, benchmarks/README.md).
INT8_STATE_BYTES_PER_INPUT = 2.5


@dataclass(frozen=True)
class RunShape:
    """Everything the peak of one step depends on."""

    config: dict[str, object]
    """config.json facts: hidden_size, intermediate_size, num_hidden_layers, heads, vocab, ..."""
    method: MethodPlan
    """The method resolved for this model (compiler/methods): what it trains and what its modules keep."""
    micro_batch: int
    seq_len: int
    gradient_checkpointing: bool
    dtype: str = "float32"
    """Dtype the weights are loaded in (for quantized bases: the compute dtype)."""
    optimizer: str = "adamw_torch"
    device: Literal["cuda", "cpu"] = "cpu"
    padded: bool = False
    """An attention mask is passed (padded batches): SDPA then repeats K/V for every query head."""
    grad_accum: int = 1
    loss: Literal["trl", "hf", "kept"] = "trl"
    """How the loss is computed: "trl" is SFTTrainer's fused, tiled LM head (what train.py runs);
    "hf" is the model's own forward with labels (full logits, then cross-entropy); "kept" is ftc's head
    over the kept positions (ftc.runtime.lmhead, chosen on CPU: compiler/plan/lmhead.py)."""
    parallel: Parallel = Parallel()  # the strategy over several devices (estimate_shard); default one device
    reference_copy: bool = False
    """DPO/KTO with train.reference = copy: a frozen second model in the load dtype (no gradients, no states).
    A preference objective's doubled rows (chosen and rejected) are in micro_batch already (shape_for)."""
    objective: str = "sft"  # train.objective: ORPO and SimPO read the full logits (estimate_preference)
    attention: str = "sdpa"
    """attn_implementation (compiler/plan/kernels.py): flash_attention_2 takes no mask and K/V per KV head."""

    @property
    def masked(self) -> bool:
        """SDPA gets an explicit mask (padded rows, prefix tuning): it repeats K/V per query head and keeps the mask.
        FlashAttention-2 unpads rows into its varlen kernel instead (transformers' modeling_flash_attention_utils)."""
        return self.attention != "flash_attention_2" and (self.padded or bool(self.terms.prefix_tokens))

    @cached_property
    def terms(self) -> ActivationTerms:
        return self.method.activation_terms(dims(self.config), _activation_bytes(self))


@dataclass(frozen=True)
class Memory:
    """Bytes per component at the estimated peak, and why."""

    weights: int
    trainable: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    overhead: int
    peak_phase: str
    reasons: tuple[str, ...] = field(default=())
    buffers: int = 0  # gathered layers and communication buckets (several devices)
    host: int = 0  # host RAM one process needs for what is offloaded; not part of the device's total
    loading: Loading = Loading(0, 0, 0, "")  # host RAM while the model loads, before training; not in the total

    @property
    def total(self) -> int:
        return self.as_dict()["total"]

    def as_dict(self) -> dict[str, int]:
        """The device's components (every field but peak_phase, reasons, host and loading, in order; buffers
        only when there are some) and their total."""
        parts = {name: value for name, value in asdict(self).items()
                 if name not in ("peak_phase", "reasons", "host", "loading") and (name != "buffers" or value)}
        return {**parts, "total": sum(parts.values())}


@dataclass(frozen=True)
class Dims:
    """The shapes memory depends on (a method's hooks read them too)."""

    h: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    fused: bool = False
    """q/k/v and gate/up are one projection each (Phi-3's qkv_proj and gate_up_proj)."""

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each linear layer of one decoder block, by the architecture's names."""
        if self.fused:  # modeling_phi3.py: qkv_proj is q, k and v side by side; gate_up_proj gate and up
            return {"qkv_proj": (self.h, self.q_dim + 2 * self.kv_dim), "o_proj": (self.q_dim, self.h),
                    "gate_up_proj": (self.h, 2 * self.inter), "down_proj": (self.inter, self.h)}
        return {"q_proj": (self.h, self.q_dim), "k_proj": (self.h, self.kv_dim), "v_proj": (self.h, self.kv_dim),
                "o_proj": (self.q_dim, self.h), "gate_proj": (self.h, self.inter),
                "up_proj": (self.h, self.inter), "down_proj": (self.inter, self.h)}

    def targeted(self, targets: str | list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, int]]:
        """The linear layers a resolved target list names ("all-linear": every one, as PEFT finds them)."""
        linears = self.linears()
        return linears if isinstance(targets, str) or targets is None else {
            n: shape for n, shape in linears.items() if n in targets}


REQUIRED_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def can_estimate(config: dict[str, object] | None) -> bool:
    return config is not None and all(isinstance(config.get(k), int) for k in REQUIRED_KEYS)


def dims(config: dict[str, object]) -> Dims:
    """The shapes from config.json facts (with the model type's defaults)."""
    c: dict[str, Any] = with_defaults(config)
    h, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
    return Dims(h=h, inter=int(c.get("intermediate_size") or 4 * h), layers=int(c["num_hidden_layers"]), heads=heads,
                kv_heads=int(c.get("num_key_value_heads") or heads), head_dim=int(c.get("head_dim") or h // heads),
                vocab=int(c["vocab_size"]), tied=bool(c.get("tie_word_embeddings", False)),
                fused="qkv_proj" in LINEAR_MODULES.get(str(c.get("model_type")), ()))


def parameter_counts(d: Dims) -> dict[str, int]:
    """Parameters by kind: linear (quantizable), embed, head (0 if tied), norm."""
    linear = d.layers * sum(i * o for i, o in d.linears().values())
    return {"linear": linear, "embed": d.vocab * d.h, "head": 0 if d.tied else d.vocab * d.h,
            "norm": d.layers * 2 * d.h + d.h}


def _weights(shape: RunShape, d: Dims) -> tuple[int, int, list[str]]:
    """(frozen weight bytes, trainable weight bytes, reasons)."""
    e = DTYPE_BYTES[shape.dtype]
    counts = parameter_counts(d)
    total = sum(counts.values())
    trained = shape.method.trainable_parameters(d)
    if shape.method.trains_base_weights:  # the trained weights stay in the load dtype, inside the model
        return (total - trained) * e, trained * e, [f"weights: {total / 1e6:,.0f}M parameters x {e} B, "
                                                    f"{trained / 1e6:,.1f}M of them trainable"]
    # PEFT keeps adapter weights in fp32 (autocast_adapter_dtype=True) whatever the base dtype.
    adapter = trained * 4
    if shape.method.quantization is None:
        # PiSSA writes the SVD residual over the linear weights after loading (see _checkpoint_kept)
        residual = counts["linear"] * e if shape.method.rewrites_base_weights and _checkpoint_kept(shape) else 0
        return total * e + residual, adapter, [f"weights: {total / 1e6:,.0f}M frozen parameters x {e} B; "
                                               f"{trained / 1e6:,.2f}M adapter parameters in fp32"]
    per = {"nf4": NF4_DQ_BYTES_PER_PARAM if shape.method.get("double_quant", True) else NF4_BYTES_PER_PARAM,
           "int8": INT8_BYTES_PER_PARAM}[shape.method.quantization]
    # the embeddings, head and norms stay in the compute dtype (templates/methods/_load_base.py.j2
    # does not call prepare_model_for_kbit_training, which would copy them to fp32)
    rest = counts["embed"] + counts["head"] + counts["norm"]
    frozen = int(counts["linear"] * per) + (total * e if _checkpoint_kept(shape) else rest * e)
    if shape.method.quantization == "int8":
        frozen += d.layers * sum(o for _, o in d.linears().values()) * 4  # SCB: fp32 scale per row
    return frozen, adapter, [f"weights: {counts['linear'] / 1e6:,.0f}M quantized at {per:.3f} B, "
                          f"{rest / 1e6:,.0f}M embedding/head/norm parameters x {e} B"]


def _checkpoint_kept(shape: RunShape) -> bool:
    """On CPU, from_pretrained reads each checkpoint file into one buffer, and the tensors it loads
    without a dtype conversion are views of that buffer, which lives while any of them does. So when
    some weights are replaced after loading (quantized linears; PiSSA's residual weights) the ones
    that stay (embeddings, norms) keep the whole checkpoint alive. Measured on the emitted scripts
    (transformers 5.24, benchmarks/README.md): tiny lora8 and pissa keep the 6.8 MiB fp32 file."""
    # a config without a dtype: fp32, as the bundled model's safetensors cache is written (core/bundled.py;
    # measured: SmolLM2 qlora in bf16 keeps no file buffer)
    saved = shape.config.get("dtype") or shape.config.get("torch_dtype") or "float32"
    return shape.device == "cpu" and saved == shape.dtype


def _saved_dtype(shape: RunShape) -> str:
    """The dtype config.json says the checkpoint was saved in (else the load dtype)."""
    saved = str(shape.config.get("dtype") or shape.config.get("torch_dtype") or shape.dtype).removeprefix("torch.")
    return saved if saved in DTYPE_BYTES else shape.dtype


def _activation_bytes(shape: RunShape) -> int:
    """Bytes per element of the hidden states: the load dtype's, quantized bases included (their
    norms and embeddings stay in the compute dtype, and bitsandbytes returns the input's dtype)."""
    return DTYPE_BYTES[shape.dtype]


def _frozen_block_per_token(shape: RunShape, d: Dims) -> int:
    """Bytes per token a decoder block with no trainable weight keeps when its input requires grad
    (prompt learning, IA3, LLaMA-Adapter, blocks below a tied trained head). A frozen linear layer
    keeps nothing (its weight needs no gradient, so autograd saves no input), nor does the norms'
    frozen weight multiply: each RMSNorm keeps only pow()'s fp32 input, SDPA its q, k, v, output
    and logsumexp, the SwiGLU silu's gate and the product's two factors. Measured: within 0.3 % of
    a tied linear_probe's 30 frozen blocks (llama-small 4x128)."""
    e = _activation_bytes(shape)
    attn_kv = 2 * (d.q_dim if shape.masked else d.kv_dim)
    if shape.terms.prefix_tokens:
        # Prefix tuning: keys and values span the virtual tokens too, and the mask PEFT extends over
        # them is explicit (queries and keys differ in length), so transformers repeats K and V per
        # query head (sdpa_attention.use_gqa_in_sdpa) whether or not the batch is padded (not under
        # FlashAttention-2, which reads K/V per KV head).
        attn_kv = attn_kv * (shape.seq_len + shape.terms.prefix_tokens) // max(1, shape.seq_len)
    return (2 * 4 * d.h + e * (d.q_dim + attn_kv + d.q_dim) + 4 * d.heads + 3 * e * d.inter
            + _sdpa_mask_per_token(shape))


def _sdpa_mask_per_token(shape: RunShape) -> int:
    """Bytes per token and layer of an explicit attention mask (padded batches; prefix tuning
    always): SDPA converts the boolean mask to an additive bias in the query's dtype in every
    layer (aten convert_boolean_attn_mask) and keeps it for backward, one element per key position
    (measured on CPU in fp32, aten::where: padded llama-tiny LoRA 4x512 +24 MiB, llama-small
    4x128 +52 MiB with the repeated K/V; not yet measured on a GPU)."""
    if not shape.masked:
        return 0
    keys = shape.seq_len + shape.terms.prefix_tokens + shape.terms.prompt_tokens
    return _activation_bytes(shape) * keys


def _layer_activations(shape: RunShape, d: Dims, tokens: int) -> int:
    """Bytes one decoder block keeps for backward (no checkpointing): a trained block's or a frozen
    one's, plus what the method's own modules keep (its activation terms)."""
    trained = shape.terms.keeps_linear_inputs
    block = _trained_block_per_token(shape, d) if trained else _frozen_block_per_token(shape, d)
    # Without checkpointing the int8 matmul's kept input is the linear input a trained block already
    # keeps (measured: tiny lora8 keeps less than lora, benchmarks/README.md); with it, it outlives
    # the block (_activations); a frozen block keeps no linear input, so its state adds.
    int8 = _int8_state(shape, d, tokens) if shape.gradient_checkpointing or not trained else 0
    return (block + shape.terms.per_token) * tokens + int8


def _trained_block_per_token(shape: RunShape, d: Dims) -> int:
    """Bytes per token a decoder block keeps when its linear layers' inputs are needed."""
    e = _activation_bytes(shape)
    attn_kv = 2 * (d.q_dim if shape.masked else d.kv_dim)  # K and V, repeated per query head under a mask
    # RMSNorm computes in fp32: pow() keeps the fp32 input, the weight's multiply keeps the
    # normalized value cast back to the dtype (the same fp32 tensor when e = 4), and the output is
    # kept as the projections' input. fp32: 4 + 4 + 4 bytes; bf16: 4 + 2 + 2.
    norm = (4 + e + e) * d.h - (e * d.h if shape.terms.frozen_norms else 0)
    # SDPA (flash kernels on CUDA and CPU) keeps q, k, v, its output and a logsumexp per row; o_proj
    # keeps a contiguous copy of the output as its input. (Linear layers keep their input even when
    # their weight is frozen: measured, LoRA keeps what full fine-tuning keeps plus the adapters'.)
    attention = e * (d.q_dim + attn_kv + d.q_dim + d.q_dim) + 4 * d.heads + _sdpa_mask_per_token(shape)
    # SwiGLU: silu keeps gate, the product keeps silu(gate) and up, down_proj keeps the product.
    mlp = 4 * e * d.inter
    per_token = 2 * norm + attention + mlp
    if shape.method.quantization == "nf4":
        # bitsandbytes MatMul4Bit saves only the packed weight (autograd/_functions.py ctx.tensors =
        # (None, B)), so the base linears keep none of the inputs counted above: both norms' outputs,
        # o_proj's and down_proj's inputs (measured on CPU: tiny qlora keeps 8 MiB less than lora at
        # 4x128; the same autograd function runs on CUDA, not measured there).
        per_token -= e * (2 * d.h + d.q_dim + d.inter)
    return per_token


def _int8_state(shape: RunShape, d: Dims, tokens: int) -> int:
    """bitsandbytes int8 matmuls keep a quantized copy of each input with its row statistics in
    the layer's state, outside autograd, so checkpointing does not drop it (measured ~2.5 B per
    input feature of every linear layer, with and without checkpointing)."""
    if shape.method.quantization != "int8":
        return 0
    return int(INT8_STATE_BYTES_PER_INPUT * sum(i for i, _o in d.linears().values()) * tokens)


def _tokens(shape: RunShape) -> int:
    """Positions per micro-batch; soft prompts (prompt, ptuning) lengthen every sequence."""
    return shape.micro_batch * (shape.seq_len + shape.terms.prompt_tokens)


def _activations(shape: RunShape, d: Dims, logits: int) -> tuple[int, str]:
    tokens = _tokens(shape)
    e = _activation_bytes(shape)
    layer = _layer_activations(shape, d, tokens)
    embed_out = e * d.h * tokens  # embedding output (the first block's input)
    if shape.terms.frozen_norms and not shape.gradient_checkpointing:  # (checkpointing makes it require grad)
        # neither it nor the first norm's pow() input is kept (ActivationTerms.frozen_norms)
        embed_out = -4 * d.h * tokens
    final_norm = (4 + e + e) * d.h * tokens  # the final RMSNorm, as in a block
    if not shape.terms.final_norm_trained:
        final_norm = 4 * d.h * tokens  # frozen: only pow()'s fp32 input (see _frozen_block_per_token)
    t = shape.terms
    if t.autograd_blocks is not None and not shape.gradient_checkpointing:
        # Only the top blocks run under autograd (freeze: the trained ones; LLaMA-Adapter: the
        # adapted ones), unless a tied trained head makes the embedding output require grad.
        below = (d.layers - t.autograd_blocks) * _frozen_block_per_token(shape, d) * tokens if t.frozen_below else 0
        return below + t.autograd_blocks * layer - t.untracked_per_token * tokens + final_norm, t.why
    if shape.gradient_checkpointing:
        # Each checkpointed block keeps its input; backward recomputes one block at a time, after
        # the loss's vocab-wide buffers are gone with the fused TRL head (they overlap otherwise).
        kept = d.layers * (e * d.h * tokens + _int8_state(shape, d, tokens))
        # "hf" keeps the logits themselves (4 B per entry of the 12) through the backward; "kept" returns
        # only the kept positions' log-probabilities, so its log-softmax is gone once its backward ran.
        retained = tokens * d.vocab * 4 if shape.loss == "hf" else 0
        recomputed = max(0, layer + retained - logits)
        return kept + recomputed + embed_out + final_norm, "activations: block inputs kept, one block recomputed"
    return d.layers * layer + embed_out + final_norm, f"activations: {d.layers} blocks x {layer / 2**20:,.1f} MiB"


def _optimizer_step_temporaries(shape: RunShape, d: Dims, grads: int) -> int:
    """Extra bytes while AdamW updates: the single-tensor loop (CPU) allocates sqrt(v) and the
    division for one parameter at a time, so twice the largest trainable tensor; the fused kernel
    (CUDA) none; the foreach path (CUDA, adamw_torch) about one more copy of all gradients."""
    if shape.device == "cuda":
        return 0 if shape.optimizer.endswith("fused") or "8bit" in shape.optimizer else grads
    bytes_per = DTYPE_BYTES[shape.dtype] if shape.method.trains_base_weights else 4
    return 2 * bytes_per * shape.method.largest_trainable_tensor(d)


def _footprint(shape: RunShape, d: Dims, frozen: int, trainable: int, optimizer: int) -> Footprint:
    """One process's model states, with the unit sizes sharding strategies gather (estimate_shard)."""
    e, q, counts = DTYPE_BYTES[shape.dtype], shape.method.quantization, parameter_counts(d)
    stored = {"nf4": NF4_DQ_BYTES_PER_PARAM, "int8": INT8_BYTES_PER_PARAM}[q] if q else e
    block, k = counts["linear"] // d.layers, shape.method.trainable_parameters(d)
    # the norms, embeddings and head stay in the compute dtype, quantized bases included (see _weights)
    return Footprint(frozen, trainable, k, optimizer, e, int(block * stored) + 2 * d.h * e,
                     min(k, block + 2 * d.h) if shape.method.trains_base_weights else k // d.layers,
                     ((counts["head"] or counts["embed"]) + d.h) * e, counts["embed"] * e, d.h)


def estimate_memory(shape: RunShape) -> Memory:
    """The estimated peak of one optimizer step on one device, split by component."""
    d = dims(shape.config)
    frozen, trainable, reasons = _weights(shape, d)
    if shape.reference_copy:
        frozen += sum(parameter_counts(d).values()) * DTYPE_BYTES[shape.dtype]
        reasons.append("reference: a frozen copy of the base (DPO/KTO), its forward without gradients")
    # bnb 8-bit AdamW: two uint8 states + an fp32 absmax per 256 values (optim/optimizer.py); AdamW:
    # exp_avg and exp_avg_sq in the parameter's dtype
    optimizer = (int(shape.method.trainable_parameters(d) * (2 + 2 * 4 / 256)) if "8bit" in shape.optimizer
                 else 2 * trainable)
    # on a CPU the "device" is host RAM already: offload moves nothing out of it (measured: 2 x gloo ZeRO-3)
    parallel = replace(shape.parallel, offload="none") if shape.device == "cpu" else shape.parallel
    footprint = _footprint(shape, d, frozen, trainable, optimizer)
    states = shard(footprint, parallel)
    saved = _saved_dtype(shape)
    load = loading(footprint, shape.parallel, sum(parameter_counts(d).values()) * DTYPE_BYTES[saved],
                   device=shape.device, quantized=shape.method.quantization is not None, converted=saved != shape.dtype)
    frozen, trainable, grads, optimizer = states.frozen, states.trainable, states.gradients, states.optimizer
    reasons += [states.why] if shape.parallel.strategy != "single" else []
    logits = logits_bytes(shape, d, DTYPE_BYTES[shape.dtype], _tokens(shape))
    activations, why = _activations(shape, d, logits)
    overhead = CUDA_CONTEXT_BYTES if shape.device == "cuda" else 0
    # Two candidate peaks: the start of backward (activations + logits live, gradients only if
    # accumulated from earlier micro-batches) and the optimizer step (all gradients live).
    temporaries = _optimizer_step_temporaries(shape, d, grads)
    accumulated = grads if shape.grad_accum > 1 else 0
    if activations + logits + accumulated >= grads + temporaries:
        return Memory(frozen, trainable, accumulated, optimizer, activations, logits, overhead, "start of backward",
                      (*reasons, why), states.buffers, states.host, load)
    # the optimizer step: every gradient, the states and the update's temporaries
    return Memory(frozen, trainable, grads, optimizer + temporaries, 0, 0, overhead, "optimizer step",
                  (*reasons, why), states.buffers, states.host, load)
