"""`ftc plan SPEC --gpus LIST [--devices N,N]`: the what-if table (compiler/whatif.py), as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ftc.compiler.overrides import Override
from ftc.compiler.throughput import GPU_MFU, duration
from ftc.compiler.whatif import Row, parse_gpus, what_if
from ftc.core.errors import Problem, SpecError

TIME_MODEL = (f"time: FLOPs per token of the model and method (~6N full, ~4N + adapter terms for frozen-base methods, "
              f"+1 forward with checkpointing) x tokens per step / (GPU dense peak x {GPU_MFU:.0%} assumed MFU); "
              "data parallel without communication cost; see docs/time-model.md for the sources")


def _devices(text: str | None) -> list[int]:
    if not text:
        return [1]
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(n < 1 or n > 64 for n in counts):
        raise SpecError([Problem(f"--devices {text}", None, "", "expected device counts from 1 to 64, e.g. 1,2,8")])
    return list(dict.fromkeys(counts))


def _spec_gpu(args: argparse.Namespace, overrides: tuple[Override, ...]) -> str:
    """`--devices` without `--gpus`: the spec's own GPU."""
    from ftc.compiler.load import load_spec

    gpu = load_spec(args.spec, overrides).spec.hardware.gpu
    if gpu is None:
        raise SpecError([Problem("--devices", None, "", "the spec names no hardware.gpu; say which with --gpus NAME")])
    return gpu


def _json(row: Row) -> dict[str, Any]:
    return {"gpu": row.gpu, "devices": row.devices, "fits": row.fits, "method": row.method,
            "quantization": row.quantization, "change": row.change, "micro_batch_size": row.micro,
            "grad_accum": row.accum, "gradient_checkpointing": row.checkpointing, "strategy": row.strategy,
            "peak_gib": row.peak_gib, "budget_gib": row.budget_gib,
            "step_seconds": row.step.seconds if row.step else None, "total_steps": row.total_steps,
            "total_seconds": row.total_seconds, "note": row.note}


def _table(rows: list[Row], spec: str, table_class: Any) -> Any:
    many = any(r.devices != 1 for r in rows)
    table = table_class(title=f"what fits where: {spec}")
    columns = ["GPU", *(["devices", "strategy"] if many else []), "method", "micro x accum", "ckpt", "peak/budget GiB",
               "step", "total"]
    for name in columns:
        table.add_column(name, justify="left" if name in ("GPU", "method", "strategy", "ckpt") else "right")
    for row in rows:
        devices = [str(row.devices), row.strategy] if many else []
        if not row.fits:
            what = "does not fit" if row.note.startswith("does not fit") else "see below"
            table.add_row(row.gpu, *devices, f"{row.method}: {what}", *[""] * 5, style="red")
            continue
        method = row.method + ("" if row.quantization == "none" else f" ({row.quantization})")
        method += "" if row.change == "kept" else f", {row.change}"
        memory = f"{row.peak_gib:,.1f}/{row.budget_gib:,.1f}" if row.peak_gib and row.budget_gib else "?"
        table.add_row(row.gpu, *devices, method, f"{row.micro} x {row.accum}", "on" if row.checkpointing else "off",
                      memory, duration(row.step.seconds if row.step else None), duration(row.total_seconds))
    return table


def show_what_if(args: argparse.Namespace, overrides: tuple[Override, ...]) -> int:
    gpus = parse_gpus(args.gpus or _spec_gpu(args, overrides))
    rows = what_if(args.spec, gpus, _devices(args.devices), overrides)
    if args.json:
        print(json.dumps({"spec": args.spec, "time_model": TIME_MODEL, "rows": [_json(r) for r in rows]}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(_table(rows, args.spec, Table))
    for line in dict.fromkeys(f"{r.gpu}{'' if r.devices == 1 else f' x{r.devices}'}: {r.note}" for r in rows):
        console.print(line, markup=False)
    console.print(TIME_MODEL, markup=False)
    return 0
