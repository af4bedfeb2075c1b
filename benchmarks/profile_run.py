"""Run a script under the PyTorch profiler and write the peak of its live tensor bytes.

    python benchmarks/profile_run.py OUT_DIR SCRIPT [ARGS...]

The script runs unchanged (runpy, as `__main__`) inside `torch.profiler.profile(profile_memory=True)`.
Every allocation and free of PyTorch's CPU allocator is an event with a time, an address and a
signed size; sorted by time, their running sum is the live tensor bytes, and its maximum the peak
(NOTES.md, DESIGN.md "Measuring memory"). Only markers are added, through class-level hooks that
leave the script's code alone: the span of `Trainer.train` and of each `Trainer.evaluate` (the
phases), the model's weight storages when training starts and again at the first optimizer step
(after the Trainer has wrapped, sharded or partitioned the model), the gradients just before each
optimizer step and the optimizer state (and parameters) just after it (to split the peak into components). Under
sharding a parameter's own storage is not its bytes: an FSDP2 parameter is a DTensor whose local
shard holds them, a DeepSpeed ZeRO-3 parameter an empty tensor whose partition is `ds_tensor`
(and ZeRO-2/3's optimizer steps on flat fp32 partitions), so the local tensors are what is marked.

Each process writes OUT_DIR/rank{RANK}.json (RANK from the environment, 0 alone), so a script
launched as several processes gives every process's peak.
"""

from __future__ import annotations

import bisect
import json
import os
import runpy
import sys
from pathlib import Path
from typing import Any

# The categories of live bytes at a peak; `other` is activations, logits and temporaries.
CATEGORIES = ("weights", "gradients", "optimizer", "other")


class Marks:
    """Pointers of known tensors, each list tagged with the profiler-clock moment it was taken."""

    def __init__(self) -> None:
        self.sets: list[tuple[str, str, list[tuple[int, int]]]] = []  # (marker name, category, (ptr, bytes))
        self.trained_params = 0
        self.prepared = False  # the weights were marked again at the first optimizer step
        self.held: list[int] = []  # parameter bytes this process holds, their logical bytes, sharded parameters

    def take(self, category: str, tensors: list[Any]) -> None:
        from torch.profiler import record_function

        seen: dict[int, int] = {}
        for t in (local for t in tensors for local in _local(t)):
            if t.device.type != "meta" and t.untyped_storage().nbytes():
                s = t.untyped_storage()
                seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
        name = f"ftc-bench::mark{len(self.sets)}"
        with record_function(name):  # an event whose time is on the profiler's own clock
            pass
        self.sets.append((name, category, sorted(seen.items())))


def _local(t: Any) -> list[Any]:
    """The tensors that hold `t`'s bytes in this process: an FSDP2 DTensor's local shard, a ZeRO-3
    parameter's partition (`ds_tensor`, beside its empty or gathered data), else `t` itself."""
    if t is None:
        return []
    if hasattr(t, "_local_tensor"):  # torch.distributed.tensor.DTensor (FSDP2 parameters, gradients, moments)
        return [t._local_tensor]
    partition = getattr(t, "ds_tensor", None)  # deepspeed/runtime/zero/partition_parameters.py
    return [t] + ([partition] if partition is not None else [])


def _weight_tensors(model: Any) -> list[Any]:
    """Parameters, buffers and bitsandbytes state hanging off them (quant_state, SCB)."""
    import torch

    found = list(model.parameters()) + list(model.buffers())
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        for holder in (p, state, getattr(state, "state2", None)):
            found += [v for v in vars(holder).values() if isinstance(v, torch.Tensor)] if holder is not None else []
    return found


def install_hooks(marks: Marks) -> None:
    """Markers around Trainer.train / Trainer.evaluate and the optimizer steps (no script edits)."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
    from torch.profiler import record_function
    from transformers import Trainer

    train, evaluate = Trainer.train, Trainer.evaluate
    trainers: list[Any] = []

    def traced_train(self: Any, *args: Any, **kwargs: Any) -> Any:
        trainers.append(self)
        marks.take("weights", _weight_tensors(self.model))
        marks.trained_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        with record_function("ftc-bench::train"):
            return train(self, *args, **kwargs)

    def traced_evaluate(self: Any, *args: Any, **kwargs: Any) -> Any:
        with record_function("ftc-bench::eval"):
            return evaluate(self, *args, **kwargs)

    def before_step(opt: Any, args: Any, kwargs: Any) -> None:
        if trainers and not marks.prepared:  # the weights as the strategy holds them once prepared
            marks.prepared = True
            model = trainers[-1].model
            marks.take("weights", _weight_tensors(model))
            # what this process holds of the parameters against their logical size (1/world when sharded)
            marks.held = [sum(t.numel() * t.element_size() for p in model.parameters() for t in _local(p)[-1:]),
                          sum(getattr(p, "ds_numel", p.numel()) * p.element_size() for p in model.parameters()),
                          sum(hasattr(p, "_local_tensor") or hasattr(p, "ds_tensor") for p in model.parameters())]
        marks.take("gradients", [p.grad for g in opt.param_groups for p in g["params"]])

    def after_step(opt: Any, args: Any, kwargs: Any) -> None:
        states = [t for s in opt.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
        # DeepSpeed ZeRO steps a torch optimizer on its fp32 partitions (the master copy): optimizer state too;
        # elsewhere the optimizer's parameters are the model's, already marked as weights (the first mark wins)
        marks.take("optimizer", states + [p for g in opt.param_groups for p in g["params"]])

    Trainer.train, Trainer.evaluate = traced_train, traced_evaluate  # type: ignore[method-assign]
    register_optimizer_step_pre_hook(before_step)
    register_optimizer_step_post_hook(after_step)


def _events(prof: Any) -> tuple[list[tuple[int, int, int, str]], dict[str, list[tuple[int, int]]]]:
    """CPU allocation events (time, ptr, signed bytes, enclosing op) sorted by time, and the
    ftc-bench:: ranges by name."""
    events, ranges = [], {}
    stack = [(e, "?") for e in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        e, op = stack.pop()
        if e.name.startswith("ftc-bench::"):
            ranges.setdefault(e.name, []).append((e.start_time_ns, e.end_time_ns))
        extra = e.typed[1]
        if type(extra).__name__ == "_ExtraFields_Allocation":
            if str(extra.device).startswith("cpu"):
                events.append((e.start_time_ns, extra.ptr, extra.alloc_size, op))
            continue
        op = e.name if type(extra).__name__ == "_ExtraFields_TorchOp" and "::mark" not in e.name else op
        stack += [(c, op) for c in e.children]
    events.sort(key=lambda ev: ev[0])
    return events, ranges


def _live_at(events: list[tuple[int, int, int, str]], until: int) -> dict[int, int]:
    """Allocation index of every block live at time `until`, by address."""
    live: dict[int, int] = {}
    for i, (t, ptr, size, _) in enumerate(events):
        if t > until:
            break
        if size > 0:
            live[ptr] = i
        else:
            live.pop(ptr, None)
    return live


def categorize(events: list[tuple[int, int, int, str]], marks: Marks,
               ranges: dict[str, list[tuple[int, int]]]) -> tuple[dict[int, str], int]:
    """Category of each allocation that held a marked tensor when the mark was taken, and the bytes
    of marked weight storages no allocation event holds (memory-mapped or made before profiling), as
    the last weight mark (the prepared model) saw them."""
    category: dict[int, str] = {}
    unseen: dict[str, int] = {}
    for name, cat, ptrs in marks.sets:
        if cat == "weights":
            unseen[name] = 0
        live = _live_at(events, ranges[name][0][0])
        starts = sorted(live)
        for ptr, nbytes in ptrs:
            j = bisect.bisect_right(starts, ptr) - 1
            i = live[starts[j]] if j >= 0 else None
            if i is not None and ptr < starts[j] + events[i][2]:
                category.setdefault(i, cat)
            elif cat == "weights":
                unseen[name] += nbytes
    return category, list(unseen.values())[-1] if unseen else 0


def _phase(t: int, ranges: dict[str, list[tuple[int, int]]]) -> str:
    for name in ("ftc-bench::eval", "ftc-bench::train"):
        if any(a <= t <= b for a, b in ranges.get(name, [])):
            return name.removeprefix("ftc-bench::")
    train = ranges.get("ftc-bench::train")
    return "setup" if not train or t < train[0][0] else "after"


def analyze(prof: Any, marks: Marks) -> dict[str, Any]:
    """Replay the events: the peak of each phase and what was live, by category, at each."""
    events, ranges = _events(prof)
    category, unseen = categorize(events, marks, ranges)
    live_alloc: dict[int, int] = {}
    live = dict.fromkeys(CATEGORIES, 0)
    running = 0
    peaks: dict[str, dict[str, Any]] = {}
    for i, (t, ptr, size, op) in enumerate(events):
        if size > 0:
            live_alloc[ptr] = i
            cat = category.get(i, "other")
        else:
            j = live_alloc.pop(ptr, None)
            if j is None:  # a block made before profiling started: never counted, so not uncounted
                continue
            cat = category.get(j, "other")
        running += size
        live[cat] += size
        phase = _phase(t, ranges)
        if running + unseen > peaks.get(phase, {}).get("bytes", -1):
            peaks[phase] = {"bytes": running + unseen, "op": op, "at": i, **live}
    for p in peaks.values():
        p["weights"] += unseen
        p["top"] = _top(events, category, p.pop("at"))
    return {"peaks": peaks, "unseen_weight_bytes": unseen, "end_live": running, "events": len(events),
            "trained_params": marks.trained_params, "held_param_bytes": marks.held}


def _top(events: list[tuple[int, int, int, str]], category: dict[int, str], at: int) -> list[tuple[str, int, int]]:
    """What was live after event `at`, summed by category and allocating op: (what, bytes, blocks)."""
    live: dict[int, int] = {}
    for i, (_, ptr, size, _) in enumerate(events[: at + 1]):
        if size > 0:
            live[ptr] = i
        else:
            live.pop(ptr, None)
    top: dict[str, list[int]] = {}
    for i in live.values():
        entry = top.setdefault(f"{category.get(i, 'other')}:{events[i][3]}", [0, 0])
        entry[0] += events[i][2]
        entry[1] += 1
    return sorted(((k, b, n) for k, (b, n) in top.items()), key=lambda x: -x[1])[:12]


def main(argv: list[str]) -> int:
    out_dir, script, *args = argv
    import torch
    from torch.profiler import ProfilerActivity, profile

    marks = Marks()
    install_hooks(marks)
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    code = 0
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as e:  # the script's own exit code (a failed run is reported as such)
            code = e.code if isinstance(e.code, int) else 1
    result = {"exit_code": code, "threads": torch.get_num_threads(), **analyze(prof, marks)}
    if torch.cuda.is_available():  # the GPU's own count (the events above are the CPU allocator's)
        result["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
        result["cuda_reserved_peak_bytes"] = torch.cuda.max_memory_reserved()
    rank = os.environ.get("RANK", "0")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(result), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
