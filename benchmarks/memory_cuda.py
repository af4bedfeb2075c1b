"""The memory matrix on CUDA: the emitted train.py's peak GPU memory, per process, against the per-device
estimate in its plan.json (the same compile and run as memory.py, with `device = "cuda"`).

Each case is compiled by ftc and its train.py runs unchanged under benchmarks/profile_run.py (through
torch.distributed.run whenever the plan has a strategy, as `ftc run` launches it); every process records
torch.cuda.max_memory_allocated() (`cuda_peak_bytes`) beside the CPU allocator's replay. On one GPU it runs the
single-device cases and ZeRO-3 + optimizer offload on 1 device; with 2 or more GPUs also the 2-process
strategies. Sized to finish in a few minutes on one H200 (SmolLM2-135M, 3 steps each).

    python benchmarks/memory_cuda.py --list     # the cases this machine would run
    python benchmarks/memory_cuda.py            # run them -> results/cuda.jsonl, printed table
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from memory import HERE, Case, mib, run_case

RESULTS = HERE / "results" / "cuda.jsonl"


def cases(gpus: int) -> list[Case]:
    one = [Case("smollm2", "lora", 4, False, device="cuda"), Case("smollm2", "full", 1, False, device="cuda"),
           Case("smollm2", "qlora", 2, True, device="cuda"),
           Case("smollm2", "full", 1, False, "zero3-offload", device="cuda", devices=1)]
    # the attention choice's estimate (compiler/plan/kernels.py): a padded LoRA batch under SDPA keeps a mask and
    # K/V repeated per query head, under FlashAttention-2 neither (the flash case needs flash-attn installed)
    one += [Case("smollm2", "lora", 8, False, device="cuda", attention=a) for a in ("sdpa", "flash_attention_2")]
    several = [Case("smollm2", k, 2, False, s, device="cuda", devices=2) for k in ("lora", "full")
               for s in ("ddp", "zero2", "fsdp", "zero3", "zero3-offload")]
    return one + (several if gpus >= 2 else [])


def row(r: dict[str, Any]) -> str:
    """Estimate, the largest process's GPU peak (allocated and reserved) and the error."""
    if "error" in r:
        return f"| {r['key']} | – | failed: {r['error'].splitlines()[-1][:80]} | | |"
    est = r["estimate"]["total"]
    peak = max(k.get("cuda_peak_bytes", 0) for k in r["ranks"])
    reserved = max(k.get("cuda_reserved_peak_bytes", 0) for k in r["ranks"])
    err = f"{(est - peak) / peak:+.1%}" if peak else "no GPU count"
    return f"| {r['key']} | {mib(est)} | {mib(peak)} | {mib(reserved)} | {err} |"


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="print the cases and stop")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per case")
    args = ap.parse_args(argv)
    gpus = torch.cuda.device_count()
    todo = cases(max(gpus, 1))
    if args.list:
        print("\n".join(c.key for c in todo))
        return 0
    if not gpus:
        raise SystemExit("no CUDA device: this benchmark measures GPU memory (memory.py measures the CPU)")
    work = Path(tempfile.mkdtemp(prefix="ftc-bench-cuda."))
    print("| configuration | est MiB | peak allocated | peak reserved | err |\n|---|---:|---:|---:|---:|", flush=True)
    records = []
    for case in todo:
        records.append(run_case(case, work, args.timeout))
        print(row(records[-1]), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
