"""Several training processes (torchrun sets RANK, LOCAL_RANK and WORLD_SIZE): which one writes what, the
data stage run once per machine, decisions every process takes together, and the saved adapter checked whole.

Rank 0 writes RUN_DIR/events.jsonl, the checkpoints' manifests and final/; every other rank writes its events
to RUN_DIR/ranks/<rank>/ (nothing is lost, nothing interleaves). Imported only by training scripts.
"""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Any

RANK = int(os.environ.get("RANK", "0"))
LOCAL_RANK = int(os.environ.get("LOCAL_RANK", "0"))
WORLD_SIZE = int(os.environ.get("WORLD_SIZE", "1"))


def own_dir(run_dir: Path) -> Path:
    """Where this process writes: the run directory itself for rank 0, RUN_DIR/ranks/<rank>/ for the others."""
    return Path(run_dir) if RANK == 0 else Path(run_dir) / "ranks" / str(RANK)


def _shared_path(run_dir: Path) -> Path:
    # The processes of one machine share their parent, the torchrun agent, which is new for every launch:
    # a file named after it is never one of an earlier attempt.
    return Path(run_dir) / "ranks" / f"data.{os.getppid()}.pickle"


def load_shared_data(run_dir: Path) -> Any:
    """The data stage's result as local rank 0 prepared it (None for local rank 0 itself, which prepares
    it), where the data cache cannot hand it over (hub data, an unwritable cache): with the cache, every
    process calls the data stage and the cache's lock makes one build it (ftc.core.data.stage). The others wait for the file without a collective, so a long tokenization cannot time one out
    (LlamaFactory#2424); torchrun ends every process if local rank 0 fails."""
    if WORLD_SIZE == 1 or LOCAL_RANK == 0:
        return None
    path = _shared_path(run_dir)
    while not path.exists():
        time.sleep(0.2)
    with path.open("rb") as handle:
        return pickle.load(handle)  # written by this run's own local rank 0 (share_data), minutes ago


def share_data(run_dir: Path, data: Any) -> None:
    """Local rank 0: hand the data stage's result to the other processes of this machine (written whole,
    then renamed), and remove what earlier launches left."""
    if WORLD_SIZE == 1 or LOCAL_RANK != 0:
        return
    path = _shared_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob("data.*.pickle"):
        stale.unlink(missing_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(data, handle, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(partial, path)


def agree(*flags: bool) -> tuple[bool, ...]:
    """Each flag true on any process is true on all (one all-reduce): a stop request or a signal seen by
    one process stops every one at the same step, instead of leaving the others waiting in a collective."""
    import torch.distributed as dist

    if WORLD_SIZE == 1 or not dist.is_available() or not dist.is_initialized():
        return flags
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    values = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in values.tolist())


def barrier() -> None:
    """Every process reaches this point before any goes on (no-op for one process)."""
    import torch.distributed as dist

    if WORLD_SIZE > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def check_adapter_whole(folder: Path, model: Any) -> None:
    """After saving under sharding: every saved adapter tensor has the full shape of the model's parameter
    (FSDP2 + PEFT saved only rank 0's slice until accelerate PR#4206, axolotl#3772; ZeRO-3 exported empty
    LoRA tensors, peft PR#3251). Raises ValueError naming the first tensor that is not whole."""
    from safetensors import safe_open

    files = sorted(Path(folder).rglob("adapter_model.safetensors"))
    if not files:
        raise ValueError(f"no adapter_model.safetensors was saved in {folder}")
    # ZeRO-3 keeps the full shape in ds_shape (the parameter itself is an empty partition); FSDP2's DTensor
    # reports the full shape
    expected = {name: tuple(getattr(p, "ds_shape", p.shape)) for name, p in model.named_parameters() if p.requires_grad}
    by_suffix = {_key(name): shape for name, shape in expected.items()}
    for file in files:
        with safe_open(str(file), framework="pt") as saved:
            for name in saved.keys():
                shape = tuple(saved.get_slice(name).get_shape())
                want = by_suffix.get(_key(name))
                if 0 in shape or not shape or (want is not None and shape != want):
                    raise ValueError(f"{file.name}: {name} was saved with shape {list(shape)}, not the whole "
                                     f"tensor {list(want) if want else '(non-empty)'}; the save did not gather "
                                     "the shards of every process")


def _key(name: str) -> str:
    """A parameter's name without PEFT's prefix, FSDP's wrapper names and the adapter's name, so that the
    saved key (base_model.model....lora_A.weight) and the live one (...lora_A.default.weight) compare."""
    parts = [p for p in name.split(".") if p not in ("base_model", "model", "default", "_fsdp_wrapped_module",
                                                        "_checkpoint_wrapped_module", "module")]
    return ".".join(parts)
