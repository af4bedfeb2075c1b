"""How `ftc run` starts a compiled script: one process, or torchrun with a process per device (and, over
several nodes, this node's rank and where node 0 listens); and how a stop request reaches the processes."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftc.compiler.emit_launch import torchrun_args
from ftc.core.errors import RunError


@dataclass(frozen=True)
class Node:
    """This machine's place in a multi-node run (`ftc run --node-rank K --master HOST:PORT`)."""

    rank: int = 0
    master: str | None = None


def check_node(settings: dict[str, Any], node: Node) -> None:
    """Refuse node options that do not match the plan (with what to pass instead)."""
    nodes = int(settings.get("nodes", 1))
    if nodes == 1 and (node.rank or node.master):
        raise RunError("--node-rank and --master are for several nodes, but the spec has nodes = 1; leave them out")
    if nodes > 1 and not node.master:
        raise RunError(f"the spec has nodes = {nodes}: run `ftc run SPEC --node-rank K --master HOST:PORT` on each "
                       "node, K = 0 on the node whose address is HOST")
    if nodes > 1 and not 0 <= node.rank < nodes:
        raise RunError(f"--node-rank {node.rank}: the spec has nodes = {nodes}; use 0 to {nodes - 1}")
    if node.master and not (node.master.rpartition(":")[2].isdigit() and node.master.rpartition(":")[0]):
        raise RunError(f"--master {node.master!r}: write HOST:PORT (e.g. 10.0.0.1:29500)")


def is_distributed(settings: dict[str, Any]) -> bool:
    return settings.get("strategy", "single") != "single"


def script_argv(target: Path, settings: dict[str, Any], node: Node) -> list[str]:
    """The command that runs RUN_DIR/train.py: python itself, or torchrun (as `python -m torch.distributed.run`,
    the same interpreter) with one process per device."""
    script = [str(target / "train.py"), str(target)]
    if not is_distributed(settings):
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", *torchrun_args(settings, node.rank, node.master), *script]


def world_change(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a checkpoint cannot resume on the new devices, nodes or strategy (empty: it can). DDP and one
    process keep whole states, as FSDP does with its full state dict; DeepSpeed ZeRO partitions them per
    rank, so another world size fails inside DeepSpeed (DeepSpeed#2898, #7628) unless converted."""
    def world(s: dict[str, Any]) -> int:
        return int(s.get("devices", s.get("gpus", 1))) * int(s.get("nodes", 1))

    was, now = old.get("strategy", "single"), new.get("strategy", "single")
    whole = {"single", "ddp"}
    if was == now and world(old) == world(new):  # offload moves states, the checkpoint is the same
        return []
    if was in whole and now in whole or was == now == "fsdp":
        return []
    if "zero" in was or "zero" in now:
        return [f"the checkpoint holds DeepSpeed {was} states partitioned over {world(old)} processes, and the "
                f"spec now trains {now} over {world(new)}; resume with the same devices x nodes and strategy, or "
                "convert the checkpoint to DeepSpeed's universal format (python -m deepspeed.checkpoint.ds_to_universal "
                "--input_folder CHECKPOINT/global_stepN --output_folder ...) and load it with "
                "\"checkpoint\": {\"load_universal\": true} in ds_config.json"]
    return [f"strategy changed from {was} to {now}: their checkpoints hold the states differently; resume with "
            f"strategy = \"{was}\""]


def _workers(launcher: int) -> list[int]:
    """The training processes torchrun started: its children (Linux /proc; each in a session of its own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == launcher:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == launcher:  # field 4 of /proc/PID/stat: the parent
                found.append(int(entry.name))
    return found


def terminate(child: int, settings: dict[str, Any]) -> None:
    """Pass a stop request on as SIGTERM: to the script, or to every torchrun worker but not torchrun itself,
    which would end them after 30 s (elastic/multiprocessing/api.py close(timeout=30)), often before the
    checkpoint of a large model is written; they exit on their own once it is."""
    targets = _workers(child) if is_distributed(settings) and Path("/proc").is_dir() else []
    if not targets:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signal.SIGTERM)
        return
    for pid in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
