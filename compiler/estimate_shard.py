"""Per-device model states under several devices: what DDP, ZeRO-2/3 (DeepSpeed) and FSDP2 keep on each
device, what they gather and bucket while stepping, and what offload moves to host RAM (pure, no torch).

compiler/estimate.py computes one device's footprint (`Footprint`); `shard` turns it into the per-device
bytes of a strategy. Activations and the loss's buffers depend on the micro-batch only, so every strategy
keeps them whole on each device (data parallelism splits the batch, not the sequence).

Sources of each term:
- ZeRO's per-parameter accounting, Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
  Trillion Parameter Models" (arXiv:1910.02054) §3.1 and Figure 1: with mixed-precision Adam a trained
  parameter costs 2 B (16-bit weight) + 2 B (16-bit gradient) + K = 12 B (fp32 master copy, momentum,
  variance); ZeRO-2 (P_os+g) keeps 2 + (2 + K)/N per device, ZeRO-3 (P_os+g+p) (2 + 2 + K)/N. DeepSpeed
  clones an fp32 partition even for fp32 training (stage_1_and_2.py single_partition_of_fp32_groups),
  so K = 12 in every precision.
- DeepSpeed's own estimator (deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs)
  counts the largest layer gathered twice (4 x largest_layer_params in 16-bit: weights and gradients)
  and multiplies what it offloads to host RAM by additional_buffer_factor = 1.5 (pinned staging).
- ZeRO-3 releases a gathered parameter only when more than stage3_max_live_parameters (default 1e9) are
  resident, and keeps one that is reused within stage3_max_reuse_distance (default 1e9) (deepspeed/runtime/
  zero/config.py DeepSpeedZeroConfig.max_live_parameters, max_reuse_distance; ftc's ds_config leaves both
  at their defaults): up to min(the whole model, 1e9 parameters) stays gathered through forward and
  backward, not only the running and the prefetched module (measured: 2 gloo processes, a tiny model).
- HF's DeepSpeed integration fills "auto" buckets from the model (transformers integrations/deepspeed.py
  trainer_config_finalize): reduce_bucket_size = hidden^2, stage3_prefetch_bucket_size = 0.9 hidden^2.
- DDP allocates its gradient buckets as a second copy of all gradients unless gradient_as_bucket_view
  (torch/nn/parallel/distributed.py: "the saved memory size will be equal to the total gradients size";
  accelerate's DistributedDataParallelKwargs leaves it False).
- FSDP2 (torch fully_shard, one unit per decoder layer as accelerate's TRANSFORMER_BASED_WRAP builds it)
  shards weights, gradients and optimizer states (DTensor shards) by N; one unit is all-gathered while it
  runs and the next one is prefetched (torch _fsdp_param_group.py: forward/backward prefetch of one
  group), so two units are whole at once, plus the unsharded gradients of the unit being reduce-scattered.
  accelerate 1.15 (utils/fsdp_utils.py fsdp2_prepare_model) shards the input embeddings as their own unit
  and the final norm with the head as a "tail" unit with reshard_after_forward=False, so the head stays
  whole from its forward through backward; it upcasts trained low-precision weights to fp32 when mixed
  precision is on ("FSDP upcast of low precision parameters to fp32"), so their gradients and moments
  are fp32 too.
- Loading (host RAM before training starts): transformers 5 from_pretrained builds the model on the host
  unless a device_map places it (ftc sets one only for quantized bases). safetensors 0.8 memory-maps the
  checkpoint file (safe_open: one file-sized storage, page cache shared by a node's processes) and a weight
  loaded in its stored dtype is a view of it; a converted one is a private copy (measured: the tiny model's
  7.0 MiB file is one mapped block in every process, and the weights views of it). So under DDP, ZeRO-2 and
  FSDP2 (fsdp_cpu_ram_efficient_loading off) every process reads the whole checkpoint and, when the dtype
  changes, holds a whole private copy. train.py builds ZeRO-3's TrainingArguments before the model, so
  from_pretrained runs inside deepspeed.zero.Init (modeling_utils.py get_init_context): each process allocates
  only its partition, on its device (on the host under offload_param or on a CPU), and rank 0 alone reads the
  checkpoint (map_location "cpu"; the others "meta": modeling_utils.py _load_pretrained_model) and scatters it
  module by module, each module gathered on every process while it is filled (integrations/deepspeed.py
  _load_state_dict_into_zero3_model). Quantized bases skip zero.Init (is_quantized).
- Offload: FSDP's CPUOffloadPolicy moves weights, gradients and optimizer states together (there is no
  optimizer-only offload in FSDP); DeepSpeed offload_optimizer moves the fp32 partition, the states and
  the fp32 gradient partition; offload_param (ZeRO-3 only) the 16-bit weight partition too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Strategy = Literal["single", "ddp", "fsdp", "zero2", "zero3"]
Offload = Literal["none", "optimizer", "all"]

# ZeRO paper §3.1: fp32 master weight, momentum and variance per trained parameter.
ZERO_OPTIMIZER_BYTES = 12
# DeepSpeed ZeRO-3's default stage3_max_live_parameters: gathered parameters it keeps resident.
DEEPSPEED_MAX_LIVE_PARAMETERS = 10**9
# DeepSpeed's estimator: additional_buffer_factor for what it keeps in host RAM.
DEEPSPEED_HOST_FACTOR = 1.5


@dataclass(frozen=True)
class Parallel:
    """How the run is spread: the strategy, the world size (devices x nodes) and what is offloaded."""

    strategy: Strategy = "single"
    world: int = 1
    offload: Offload = "none"

    @property
    def label(self) -> str:
        if self.strategy == "single":
            return "one device"
        names = {"ddp": "DDP", "fsdp": "FSDP2", "zero2": "ZeRO-2", "zero3": "ZeRO-3"}
        extra = {"none": "", "optimizer": " + optimizer offload", "all": " + weight and optimizer offload"}
        return f"{names[self.strategy]} over {self.world} devices{extra[self.offload]}"


@dataclass(frozen=True)
class Footprint:
    """One device's model states, as compiler/estimate.py computes them for a single process."""

    frozen: int  # bytes of weights that do not train
    trainable: int  # bytes of trained weights (their own dtype)
    trainable_params: int
    optimizer: int  # the single-process optimizer states (AdamW moments in the weights' dtype, or 8-bit)
    compute_bytes: int  # bytes per element of the compute dtype (the 16-bit copy DeepSpeed trains in)
    block_bytes: int  # one decoder layer's weights as stored (quantized or not): an FSDP/ZeRO-3 unit
    block_trainable_params: int  # trained parameters of one decoder layer
    tail_bytes: int  # final norm + head (the embeddings when tied): FSDP2's unit kept whole through backward
    embed_bytes: int  # the input embeddings: with the head, ZeRO-3's largest gathered module
    hidden: int


@dataclass(frozen=True)
class Sharded:
    """Per-device bytes of the model states under a strategy, and the host RAM it needs."""

    frozen: int
    trainable: int
    gradients: int
    optimizer: int
    buffers: int  # gathered units, prefetch and communication buckets
    host: int  # bytes one process keeps in host RAM (offload)
    why: str


@dataclass(frozen=True)
class Loading:
    """Host RAM while from_pretrained builds the model: the checkpoint's mapped pages (page cache, shared by the
    processes of a node that read it) and the private bytes of rank 0's process and of each other process."""

    checkpoint: int
    first: int
    each: int
    why: str
    every_node: bool = True  # every node reads the checkpoint (False: rank 0 alone, under zero.Init)

    def node(self, devices: int, first: bool = True) -> int:
        """The host RAM of one node's `devices` processes; node 0 (`first`) holds rank 0."""
        read = self.checkpoint if first or self.every_node else 0
        return read + (self.first + (devices - 1) * self.each if first else devices * self.each)


def loading(f: Footprint, p: Parallel, checkpoint: int, *, device: str, quantized: bool, converted: bool) -> Loading:
    """Host RAM while loading (see the module docstring): `checkpoint` is the checkpoint's bytes as stored;
    `converted`: the weights are loaded in another dtype than they were saved in (private copies)."""
    if p.strategy != "zero3" or quantized:
        if quantized and device == "cuda":
            return Loading(checkpoint, 0, 0, "every process reads the checkpoint; the quantized base goes straight "
                           "onto its device (device_map)")
        private = f.frozen + f.trainable if converted else 0
        copy = "a whole converted copy each" if converted else "its weights views of the mapped file"
        return Loading(checkpoint, private, private, f"every process maps the whole checkpoint, {copy}")
    n = max(1, p.world)
    # a process's partition (on the host under offload_param), and on a CPU the module being filled, gathered
    # whole on every process (the largest: the embeddings or the head; a GPU gathers it on the device)
    gathered = max(f.embed_bytes, f.tail_bytes) if device == "cpu" else 0
    on_host = device == "cpu" or p.offload == "all"
    each = (f.frozen + f.trainable) // n + gathered if on_host else 0
    where = "in host RAM" if on_host else "on its device"
    return Loading(checkpoint, each, each, f"zero.Init: each process builds only its 1/{n} partition {where}; "
                   "rank 0 alone reads the checkpoint to scatter it", every_node=False)


def shard(f: Footprint, p: Parallel) -> Sharded:
    """The per-device model states of `f` under `p` (single and DDP keep everything on every device)."""
    n = max(1, p.world)
    if p.strategy in ("single", "ddp"):
        buckets = f.trainable if p.strategy == "ddp" else 0  # DDP's bucket copy of the gradients
        why = "DDP: every device holds the whole model; gradient buckets are a second copy of the gradients"
        return Sharded(f.frozen, f.trainable, f.trainable, f.optimizer, buckets, 0,
                       why if p.strategy == "ddp" else "one device")
    if p.strategy == "fsdp":
        return _fsdp(f, p, n)
    return _zero(f, p, n)


def _fsdp(f: Footprint, p: Parallel, n: int) -> Sharded:
    k = max(1, f.trainable_params)
    # accelerate's fp32 upcast of trained 16-bit weights: their gradients and AdamW moments follow
    trainable = 4 * f.trainable_params if f.compute_bytes < 4 and f.trainable < 4 * k else f.trainable
    optimizer = f.optimizer * trainable // max(1, f.trainable)
    # two layers whole at once (the running one and the prefetched one), the running layer's unsharded
    # gradients before reduce-scatter, and the tail unit (head) whole beyond its own shard
    units = 2 * f.block_bytes + f.block_trainable_params * (trainable // k) + f.tail_bytes * (n - 1) // n
    what = "weights, gradients and optimizer states sharded"
    why = "two layers gathered at a time (one prefetched), the head kept whole through backward"
    if p.offload == "all":  # CPUOffloadPolicy: weights, gradients and optimizer states live in host RAM
        host = (f.frozen + 2 * trainable + optimizer) // n
        return Sharded(0, 0, 0, 0, units, host, f"FSDP2: {what} {n} ways and offloaded to host RAM; {why}")
    return Sharded(f.frozen // n, trainable // n, trainable // n, optimizer // n, units, 0, f"FSDP2: {what} {n} ways; {why}")


def _zero(f: Footprint, p: Parallel, n: int) -> Sharded:
    k, b = f.trainable_params, f.compute_bytes
    weights16, grads16, states = k * b, k * b // n, k * ZERO_OPTIMIZER_BYTES // n
    reduce_bucket = f.hidden * f.hidden * b  # reduce_bucket_size "auto" = hidden^2 elements
    stage3 = p.strategy == "zero3"
    frozen = f.frozen // n if stage3 else f.frozen
    trainable = weights16 // n if stage3 else weights16
    buffers = reduce_bucket
    if stage3:  # gathered weights (at least the running and the prefetched module), the running one's gradients
        largest = max(f.block_bytes, f.embed_bytes, f.tail_bytes)
        resident = min(f.frozen + weights16, DEEPSPEED_MAX_LIVE_PARAMETERS * b)
        buffers += max(2 * largest, resident) + f.block_trainable_params * b
    name = "ZeRO-3" if stage3 else "ZeRO-2"
    sharded = "weights, gradients and optimizer states" if stage3 else "gradients and optimizer states"
    why = f"{name}: {sharded} sharded {n} ways (16-bit weights + fp32 master copy, momentum, variance)"
    host = 0
    if p.offload in ("optimizer", "all"):  # the fp32 partition, the moments and the fp32 gradients
        # the gradients stream to the host through the reduce bucket (DeepSpeed's estimator: with
        # offload_optimizer a device keeps only its 16-bit weight partition and the largest layer)
        host += states + k * 4 // n
        states = grads16 = 0
        why += "; optimizer states and fp32 gradients in host RAM"
    if p.offload == "all":  # offload_param: the 16-bit weight partition too (ZeRO-3 only)
        host += frozen + trainable
        frozen = trainable = 0
        why += "; weights in host RAM"
    if stage3:  # the gradient partition is one flat buffer, allocated once and live through backward too
        # (deepspeed/runtime/zero/stage3.py _setup_for_real_optimizer: grad_partitions_flat_buffer, on the
        # host under offload_optimizer; measured: 3.5 MiB live at the backward peak of a full 2-process run)
        buffers, grads16 = buffers + grads16, 0
    return Sharded(frozen, trainable, grads16, states, buffers, int(host * DEEPSPEED_HOST_FACTOR), why)
