"""Measure the peak memory of one real training step and compare it with ftc's estimator.

Each configuration (model shape, method, dtype, micro-batch, sequence length, gradient
checkpointing, loss path) is built the way the emitted train.py builds it, with random
weights, then trained for two full steps (forward, backward, optimizer step, zero_grad)
under the PyTorch profiler. See benchmarks/README.md for what is counted and how.

    python benchmarks/memory.py                      # the default matrix -> results/cpu.jsonl
    python benchmarks/memory.py --list               # show the configurations, run nothing
    python benchmarks/memory.py --models llama-tiny --methods lora,qlora   # a subset
    python benchmarks/memory.py --grid --models llama-tiny --seq 512 --mb 4  # cross product
    python benchmarks/memory.py --selfcheck          # the profiler sees a known 100 MiB
    python benchmarks/memory.py --report             # tables (+ estimates) -> README.md
    python benchmarks/memory.py --device cuda        # on a GPU -> results/cuda.jsonl

Every configuration runs in its own process (forked from a parent that has imported torch,
so the ~6 s import is paid once), so one run's peak never leaks into the next.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import itertools
import json
import os
import resource
import select
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"
MiB = 2**20

# Shapes scaled from real architectures so that a step runs in seconds on 2 CPU cores.
MODELS: dict[str, dict[str, Any]] = {
    # A toy Llama (Llama-2 tokenizer size): everything small except the vocabulary.
    "llama-tiny": dict(model_type="llama", hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=False),
    # SmolLM2-135M's real shape (HuggingFaceTB/SmolLM2-135M config.json).
    "llama-small": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    # Qwen2.5-0.5B's shape (Qwen/Qwen2.5-0.5B config.json) with 6 of its 24 layers.
    "qwen-small": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=6,
                       num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
METHODS = ("full", "lora", "qlora", "lora8")
# The other method kinds ftc emits (templates/methods/*.j2), measured by new_methods_matrix().
NEW_METHODS = ("freeze", "linear_probe", "dora", "rslora", "pissa", "loraplus", "prefix", "ptuning", "prompt", "ia3",
               "llama_adapter")
ALL_METHODS = METHODS + NEW_METHODS
LORA_FAMILY = ("lora", "qlora", "lora8", "dora", "rslora", "pissa", "loraplus")
PROMPT_KINDS = ("prefix", "ptuning", "prompt")
# PEFT 0.21's IA3 defaults for Llama (TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING), what plan.py names.
IA3_TARGETS, IA3_FEEDFORWARD = ("k_proj", "v_proj", "down_proj"), ("down_proj",)
DTYPES = ("float32", "bfloat16", "float16")
SEQS = (128, 512, 2048)
MBS = (1, 4, 8)
LOSSES = ("hf", "trl")  # hf: model(labels=) with full logits; trl: TRL 1.16 SFTTrainer's chunked fused LM head
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured configuration."""

    model: str
    method: str
    micro_batch: int
    seq_len: int
    gradient_checkpointing: bool
    dtype: str = "float32"
    loss: str = "hf"
    optimizer: str = "adamw_torch"
    lora_r: int = 8
    lora_dropout: float = 0.05
    lora_targets: str = "all-linear"
    double_quant: bool = True
    # The other kinds (defaults leave the four original methods' keys unchanged):
    train_layers: int = 0
    """freeze: trained last blocks; llama_adapter: adapted top layers."""
    train_modules: str = ""
    """freeze: comma list of name patterns inside the trained blocks (empty: the whole block)."""
    train_head: bool = False
    """freeze / linear_probe: the output head trains."""
    virtual_tokens: int = 0
    """prefix / ptuning / prompt: virtual tokens; llama_adapter: the adaption prompt's length."""
    encoder_hidden: int = 0
    """prefix (0: no projection) / ptuning: the encoder's hidden width."""
    padded: bool = False
    """The batch comes with an attention mask that pads the end of its first row (plan.py assumes
    padding whenever micro_batch > 1): SDPA then gets an explicit mask."""

    @property
    def key(self) -> str:
        """A stable id: results with the same key replace each other."""
        k = (f"{self.model}/{self.method}/{self.dtype}/b{self.micro_batch}xs{self.seq_len}/"
             f"gc{int(self.gradient_checkpointing)}/{self.loss}/{self.optimizer}")
        if self.method in LORA_FAMILY:
            k += f"/r{self.lora_r}d{self.lora_dropout}"
        elif self.method in ("freeze", "linear_probe"):
            k += f"/L{self.train_layers}{'[' + self.train_modules + ']' if self.train_modules else ''}h{int(self.train_head)}"
        elif self.method in PROMPT_KINDS:
            k += f"/v{self.virtual_tokens}e{self.encoder_hidden}"
        elif self.method == "llama_adapter":
            k += f"/v{self.virtual_tokens}L{self.train_layers}"
        return k + ("/padded" if self.padded else "")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_matrix() -> list[Case]:
    """57 cases of the four original methods that cover every axis without the full cross product
    (~20 min on 2 cores), then new_methods_matrix() for the other kinds.

    The cheap llama-tiny carries most axes; llama-small checks a real 30-layer shape at few tokens
    (a 512-token step takes ~45 s there); qwen-small checks the 152K vocabulary, where logits dominate.
    """
    cases: list[Case] = []
    for method, gc, mb in itertools.product(METHODS, (False, True), (1, 8)):
        cases.append(Case("llama-tiny", method, mb, 128, gc))
    cases += [Case("llama-tiny", "lora", 1, 2048, False), Case("llama-tiny", "lora", 1, 2048, True),
              Case("llama-tiny", "full", 1, 2048, False), Case("llama-tiny", "qlora", 1, 2048, True),
              Case("llama-tiny", "lora", 2, 2048, True)]
    cases += [Case("llama-tiny", "lora", 4, 512, False), Case("llama-tiny", "full", 4, 512, False),
              Case("llama-tiny", "lora", 4, 512, False, lora_dropout=0.0),
              Case("llama-tiny", "lora", 4, 512, False, loss="trl"),
              Case("llama-tiny", "full", 4, 512, False, optimizer="adamw_torch_fused"),
              Case("llama-tiny", "lora", 4, 512, False, dtype="bfloat16"),
              Case("llama-tiny", "full", 4, 512, False, dtype="bfloat16"),
              Case("llama-tiny", "qlora", 4, 512, False, dtype="bfloat16"),
              Case("llama-tiny", "lora", 4, 512, False, dtype="float16")]
    cases += [Case("llama-small", method, 1, 128, gc) for method, gc in itertools.product(METHODS, (False, True))]
    cases += [Case("llama-small", "lora", 4, 128, False), Case("llama-small", "full", 1, 128, False, dtype="bfloat16"),
              Case("llama-small", "full", 1, 128, False, optimizer="adamw_torch_fused")]
    cases += [Case("llama-small", "lora", 4, 512, False), Case("llama-small", "lora", 4, 512, True),
              Case("llama-small", "qlora", 4, 512, True), Case("llama-small", "lora8", 4, 512, True),
              Case("llama-small", "full", 4, 512, True)]
    cases += [Case("qwen-small", method, 1, 128, False) for method in METHODS]
    cases += [Case("qwen-small", "full", 1, 128, False, optimizer="adamw_torch_fused"),
              Case("qwen-small", "lora", 1, 512, False), Case("qwen-small", "lora", 1, 512, True),
              Case("qwen-small", "lora", 1, 512, False, dtype="bfloat16"), Case("qwen-small", "qlora", 4, 512, True),
              Case("qwen-small", "lora", 1, 2048, True), Case("qwen-small", "lora", 1, 2048, True, loss="trl")]
    return cases + new_methods_matrix() + padded_matrix()


def padded_matrix() -> list[Case]:
    """Padded batches (an attention mask with padding, which plan.py assumes for micro_batch > 1),
    each the twin of an unpadded case above."""
    return [Case("llama-tiny", "lora", 4, 512, False, loss="trl", padded=True),
            Case("llama-small", "lora", 4, 128, False, padded=True),
            Case("llama-small", "full", 2, 256, False, loss="trl", padded=True),
            Case("llama-tiny", "ia3", 4, 512, False, loss="trl", padded=True),
            Case("llama-small", "prompt", 4, 128, False, virtual_tokens=20, padded=True)]


def new_methods_matrix() -> list[Case]:
    """The other kinds, each with the loss its train.py uses (TRL's fused head for SFTTrainer kinds,
    the full logits for the Trainer kinds: prompt learning and LLaMA-Adapter) and their default
    sizes: llama-tiny at 8x128 and 4x512 (with and without checkpointing), llama-small at 4x128 (~10 min)."""
    T, S = "llama-tiny", "llama-small"
    cases: list[Case] = []
    sft = dict(loss="trl")
    for model, mb, seq in ((T, 1, 128), (T, 8, 128), (S, 4, 128)):  # freeze: the last 2 blocks
        cases += [Case(model, "freeze", mb, seq, gc, train_layers=2, **sft) for gc in (False, True)]
    cases += [Case(T, "freeze", 4, 512, False, train_layers=2, **sft),
              Case(T, "freeze", 8, 128, False, train_layers=1, train_modules="self_attn", train_head=True, **sft),
              Case(S, "freeze", 4, 512, True, train_layers=2, **sft)]
    cases += [Case(T, "linear_probe", 8, 128, False, train_head=True, **sft),
              Case(S, "linear_probe", 4, 128, False, train_head=True, **sft),
              Case(S, "linear_probe", 4, 128, True, train_head=True, **sft)]
    for method in ("dora", "ia3"):
        cases += [Case(T, method, 1, 128, False, **sft), Case(T, method, 8, 128, False, **sft),
                  Case(T, method, 8, 128, True, **sft), Case(T, method, 4, 512, False, **sft),
                  Case(S, method, 4, 128, False, **sft), Case(S, method, 4, 128, True, **sft)]
    cases += [Case(T, "rslora", 8, 128, False, **sft), Case(T, "pissa", 8, 128, False, lora_dropout=0.0, **sft),
              Case(T, "loraplus", 8, 128, False, **sft)]
    adapter = dict(virtual_tokens=10, loss="hf")
    cases += [Case(T, "llama_adapter", 8, 128, False, train_layers=4, **adapter),
              Case(T, "llama_adapter", 8, 128, True, train_layers=4, **adapter),
              Case(T, "llama_adapter", 4, 512, False, train_layers=4, **adapter),
              Case(S, "llama_adapter", 4, 128, False, train_layers=8, **adapter),
              Case(S, "llama_adapter", 4, 128, True, train_layers=8, **adapter)]
    prompt = dict(virtual_tokens=20, loss="hf")
    cases += [Case(T, "prefix", 8, 128, False, **prompt), Case(T, "prefix", 4, 512, False, **prompt),
              Case(T, "prefix", 8, 128, False, encoder_hidden=512, **prompt), Case(S, "prefix", 4, 128, False, **prompt)]
    cases += [Case(T, "ptuning", 8, 128, False, encoder_hidden=256, **prompt),
              Case(T, "ptuning", 8, 128, True, encoder_hidden=256, **prompt),
              Case(S, "ptuning", 4, 128, False, encoder_hidden=256, **prompt)]
    cases += [Case(T, "prompt", 8, 128, False, **prompt), Case(T, "prompt", 8, 128, True, **prompt),
              Case(T, "prompt", 4, 512, False, **prompt), Case(S, "prompt", 4, 128, False, **prompt),
              Case(S, "prompt", 4, 128, True, **prompt)]
    return cases


def grid(args: argparse.Namespace) -> list[Case]:
    """The cross product of the axis flags (all values of an axis when its flag is not given)."""
    axes = [args.models or list(MODELS), args.methods or list(METHODS), args.mb or list(MBS), args.seq or list(SEQS),
            args.gc if args.gc is not None else [False, True], args.dtypes or ["float32"], args.losses or ["hf"],
            args.optimizers or ["adamw_torch"]]
    return [Case(*p) for p in itertools.product(*axes) if not (p[3] >= 2048 and p[2] > 2)]


def select_cases(args: argparse.Namespace) -> list[Case]:
    if args.grid:
        cases = grid(args)
    else:
        cases = [c for c in default_matrix()
                 if (not args.models or c.model in args.models) and (not args.methods or c.method in args.methods)
                 and (not args.mb or c.micro_batch in args.mb) and (not args.seq or c.seq_len in args.seq)
                 and (args.gc is None or c.gradient_checkpointing in args.gc)
                 and (not args.dtypes or c.dtype in args.dtypes) and (not args.losses or c.loss in args.losses)
                 and (not args.optimizers or c.optimizer in args.optimizers)
                 and (not args.padded or c.padded)]
    return cases[: args.limit] if args.limit else cases


# ----------------------------------------------------------------------------------- build


def build(case: Case, device: str, tmp: str) -> tuple[Any, Any]:
    """The model and optimizer, built as the emitted train.py builds them (random weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

    torch.manual_seed(0)
    dtype = getattr(torch, case.dtype)
    shape = dict(MODELS[case.model])
    config = AutoConfig.for_model(shape.pop("model_type"), **shape, max_position_embeddings=max(4096, case.seq_len))
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    gc_kwargs = {"use_reentrant": False}
    if case.method in ("qlora", "lora8"):
        from peft import prepare_model_for_kbit_training

        model.save_pretrained(tmp)  # safetensors in the chosen dtype, reloaded quantized like a hub checkpoint
        del model
        if case.method == "qlora":
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=case.double_quant, bnb_4bit_compute_dtype=dtype)
        else:
            quant = BitsAndBytesConfig(load_in_8bit=True)
        model = AutoModelForCausalLM.from_pretrained(tmp, dtype=dtype, quantization_config=quant,
                                                     device_map="cpu" if device == "cpu" else {"": 0},
                                                     attn_implementation="sdpa")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=case.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif device != "cpu":
        model = model.to(device)
    if case.loss == "trl":
        # What TRL 1.16 SFTTrainer.__init__ does: chunked log-probs instead of (batch, seq, vocab) logits.
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    if case.method in METHODS or case.method in LORA_FAMILY:
        if case.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        if case.method != "full":
            from peft import LoraConfig, get_peft_model

            variant: dict[str, Any] = {"dora": {"use_dora": True}, "rslora": {"use_rslora": True},
                                       "pissa": {"init_lora_weights": "pissa_niter_4"}}.get(case.method, {})
            lora = LoraConfig(r=case.lora_r, lora_alpha=2 * case.lora_r, lora_dropout=case.lora_dropout,
                              target_modules=case.lora_targets, task_type="CAUSAL_LM", **variant)
            model = get_peft_model(model, lora)
            if case.gradient_checkpointing:
                model.enable_input_require_grads()
    else:
        model = build_other_method(model, case)
        if case.gradient_checkpointing:
            # What Trainer does once the model is built (transformers 5 activation_checkpointing_enable:
            # non-reentrant, and the embedding output made to require grad so gradients reach every block).
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    fused = case.optimizer == "adamw_torch_fused"
    if case.method == "loraplus":  # templates/methods/lora.py.j2: one AdamW, two learning rates
        from peft.optimizers import create_loraplus_optimizer

        return model, create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-4, loraplus_lr_ratio=16.0,
                                                weight_decay=0.0)
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True if fused else None)  # what the Trainer's optim builds
    return model, optimizer


class _NoEvents:
    def write(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_other_method(model: Any, case: Case) -> Any:
    """freeze, linear_probe, prompt learning, IA3 and LLaMA-Adapter, as templates/methods/*.j2 build them."""
    if case.method in ("freeze", "linear_probe"):
        from ftc.runtime.methods import freeze_except

        modules = [m for m in case.train_modules.split(",") if m]
        freeze_except(model, last_layers=case.train_layers, modules=modules, head=case.train_head, events=_NoEvents())
        return model
    from peft import (AdaptionPromptConfig, IA3Config, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig,
                      get_peft_model)

    if case.method == "prefix":
        config: Any = PrefixTuningConfig(num_virtual_tokens=case.virtual_tokens, prefix_projection=bool(case.encoder_hidden),
                                         encoder_hidden_size=case.encoder_hidden or None, task_type="CAUSAL_LM")
    elif case.method == "ptuning":
        config = PromptEncoderConfig(num_virtual_tokens=case.virtual_tokens, encoder_reparameterization_type="MLP",
                                     encoder_hidden_size=case.encoder_hidden, task_type="CAUSAL_LM")
    elif case.method == "prompt":
        config = PromptTuningConfig(num_virtual_tokens=case.virtual_tokens, task_type="CAUSAL_LM")
    elif case.method == "ia3":
        config = IA3Config(target_modules=list(IA3_TARGETS), feedforward_modules=list(IA3_FEEDFORWARD),
                           task_type="CAUSAL_LM")
    elif case.method == "llama_adapter":
        config = AdaptionPromptConfig(adapter_len=case.virtual_tokens, adapter_layers=case.train_layers,
                                      task_type="CAUSAL_LM")
    else:
        raise ValueError(f"unknown method {case.method!r}")
    return get_peft_model(model, config)


def forward_loss(model: Any, ids: Any, loss: str, mask: Any = None) -> Any:
    """The loss of one micro-batch, as Trainer.compute_loss (hf) or TRL SFTTrainer.compute_loss (trl) gets it.

    `mask`: the collator's attention mask (None: none passed); its padding positions get label -100."""
    labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
    extra = {} if mask is None else {"attention_mask": mask}
    if loss == "hf":
        # transformers' Trainer with DataCollatorForSeq2Seq: an attention mask comes with every batch,
        # which PEFT's prompt learning extends over the virtual tokens.
        out = model(input_ids=ids, labels=labels, use_cache=False, **extra)
        return out.loss  # the outputs (logits) are dropped, like Trainer.compute_loss does
    out = model(input_ids=ids, labels=labels, use_cache=False, fused_lm_head=True, **extra)
    value = -out.log_probs.sum() / out.label_mask.sum().clamp(min=1)
    # SFTTrainer also reads entropy and is_top1 for its metrics
    _ = (out.entropy.detach().sum(), out.is_top1.sum())
    return value


# ------------------------------------------------------------------------------- measure


def _tensors_of(obj: Any, depth: int = 0) -> list[Any]:
    """Tensors hanging off a bitsandbytes parameter or its quant state (absmax, code, nested state2, SCB, CB)."""
    import torch

    found = []
    if depth > 3 or obj is None:
        return found
    for name, value in vars(obj).items() if hasattr(obj, "__dict__") else []:
        if name in ("module", "_modules", "_parameters", "_buffers") or name.startswith("__"):
            continue
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif type(value).__name__ in ("QuantState", "MatmulLtState"):
            found += _tensors_of(value, depth + 1)
    return found


def storage_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind some tensors (tied and shared weights count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        s = t.untyped_storage()
        seen[s.data_ptr()] = max(seen.get(s.data_ptr(), 0), s.nbytes())
    return sum(seen.values())


def static_components(model: Any) -> dict[str, int]:
    """Weights measured from the storages themselves (from_pretrained may mmap them: no allocation event)."""
    params = list(model.parameters())
    buffers = list(model.buffers())
    extras = [t for p in params for t in _tensors_of(p)]
    extras += [t for m in model.modules() for t in _tensors_of(getattr(m, "state", None))]
    trainable = [p for p in params if p.requires_grad]
    frozen = [p for p in params if not p.requires_grad]
    total = storage_bytes(params + buffers + extras)
    return {
        "weights": total,
        "weights_trainable": storage_bytes(trainable),
        "weights_frozen": storage_bytes(frozen),
        "weights_quant_state": storage_bytes(extras) if extras else 0,
        "buffers": storage_bytes(buffers),
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in trainable),
    }


def _allocations(prof: Any, device: str) -> tuple[list[tuple], dict[str, tuple[int, int]]]:
    """Every allocation/free event (time, ptr, signed bytes, op, in_bnb) and the ftc:: phase ranges."""
    events: list[tuple] = []
    phases: dict[str, tuple[int, int]] = {}
    stack = [(e, None, False) for e in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        e, op, bnb = stack.pop()
        name = e.name
        if name.startswith("ftc::"):
            phases[name] = (e.start_time_ns, e.end_time_ns)
        typed = e.typed[1]
        if type(typed).__name__ == "_ExtraFields_Allocation":
            if str(typed.device).split(":")[0] == device:
                events.append((e.start_time_ns, typed.ptr, typed.alloc_size, op or "?", bnb))
            continue
        if type(typed).__name__ == "_ExtraFields_TorchOp" and not name.startswith("ftc::"):
            op, bnb = name, bnb or name.startswith("bitsandbytes::")
        stack += [(c, op, bnb) for c in e.children]
    events.sort(key=lambda ev: ev[0])
    return events, phases


def _phase_of(t: int, phases: dict[str, tuple[int, int]]) -> str:
    for name, (start, end) in phases.items():
        if start <= t <= end:
            return name.removeprefix("ftc::")
    return "other"


def _owners(events: list[tuple], until: int, ptrs: list[int]) -> set[int]:
    """Indices of the allocations live at time `until` whose blocks contain the given data pointers."""
    live: dict[int, int] = {}
    for i, (t, ptr, size, _, _) in enumerate(events):
        if t > until:
            break
        if size > 0:
            live[ptr] = i
        else:
            live.pop(ptr, None)
    starts = sorted(live)
    owners = set()
    for p in ptrs:
        j = bisect.bisect_right(starts, p) - 1
        if j >= 0:
            i = live[starts[j]]
            if p < starts[j] + events[i][2]:
                owners.add(i)
    return owners


def dynamic_components(prof: Any, device: str, marks: dict[str, list[int]], logit_sizes: set[int]) -> dict[str, Any]:
    """Replay the allocation events: the running sum's peak, and what was live at that moment.

    Categories: grad (blocks holding p.grad after a backward), optstate (blocks holding optimizer
    state after a step), opttemp (anything else allocated inside optimizer.step), logits (blocks
    of (tokens x vocab) size: logits, their fp32 copy, log-softmax, their gradients, TRL tiles),
    act (the rest: saved activations and forward/backward temporaries, bnb dequantization included).
    """
    events, phases = _allocations(prof, device)
    category: dict[int, str] = {}
    for mark, ptrs in marks.items():  # e.g. "s1::bwd" -> grad data pointers, "s1::opt" -> state pointers
        kind = "grad" if mark.endswith("bwd") else "optstate"
        for i in _owners(events, phases[f"ftc::{mark}"][1], ptrs):
            category[i] = kind
    live_alloc: dict[int, int] = {}  # ptr -> allocation index
    cats = ("grad", "optstate", "opttemp", "logits", "act")
    live = dict.fromkeys(cats, 0)
    cat_max = dict.fromkeys(cats, 0)
    running = peak = 0
    peak_at: dict[str, Any] = {}
    phase_peak: dict[str, int] = {}
    bnb_live = bnb_max = 0
    unmatched_free = 0
    for i, (t, ptr, size, op, bnb) in enumerate(events):
        phase = _phase_of(t, phases)
        if size > 0:
            if i not in category:
                category[i] = ("opttemp" if phase.endswith("opt") else
                               "logits" if size in logit_sizes else "act")
            live_alloc[ptr] = i
            cat, in_bnb = category[i], bnb
        else:
            j = live_alloc.pop(ptr, None)
            if j is None:
                unmatched_free += size
                continue
            cat, in_bnb = category[j], events[j][4]
        running += size
        live[cat] += size
        cat_max[cat] = max(cat_max[cat], live[cat])
        if in_bnb:
            bnb_live += size
            bnb_max = max(bnb_max, bnb_live)
        phase_peak[phase] = max(phase_peak.get(phase, running), running)
        if running > peak:
            peak = running
            peak_at = {"phase": phase, "op": op, **{f"live_{c}": live[c] for c in cats}}
    # The biggest live blocks at the peak, summed per allocating op (what the peak is made of).
    top: dict[str, int] = {}
    running, live_alloc = 0, {}
    for i, (t, ptr, size, op, _) in enumerate(events):
        if size > 0:
            live_alloc[ptr] = i
        elif live_alloc.pop(ptr, None) is None:
            continue
        running += size
        if running == peak:
            for j in live_alloc.values():
                key = f"{category[j]}:{events[j][3]}"
                top[key] = top.get(key, 0) + events[j][2]
            break
    return {
        "peak_dynamic": peak,
        "peak_at": peak_at,
        "max_by_category": cat_max,
        "phase_peaks": phase_peak,
        "bnb_temp_max": bnb_max,
        "end_live": sum(live.values()),
        "end_live_by_category": live,
        "unmatched_free_bytes": unmatched_free,
        "n_events": len(events),
        "peak_top": sorted(top.items(), key=lambda kv: -kv[1])[:10],
    }


def measure(case: Case, device: str) -> dict[str, Any]:
    """Build, then run two training steps under the profiler; return the measured components."""
    import psutil
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    proc = psutil.Process()
    t0 = time.perf_counter()
    rss0 = proc.memory_info().rss
    with tempfile.TemporaryDirectory(prefix="ftc-mem-") as tmp:
        model, optimizer = build(case, device, tmp)
        t_build = time.perf_counter() - t0
        static = static_components(model)
        rss_built = proc.memory_info().rss
        vocab = MODELS[case.model]["vocab_size"]
        ids = torch.randint(0, vocab, (case.micro_batch, case.seq_len), device=device)
        tokens = case.micro_batch * case.seq_len
        # Trainer-trained kinds get the collator's attention mask (all ones: no padding), and a padded
        # case one whose first row ends in padding (an eighth of it), as a collator pads shorter rows.
        mask = None
        if case.padded or case.method in PROMPT_KINDS or case.method == "llama_adapter":
            mask = torch.ones_like(ids)
            if case.padded:
                mask[0, case.seq_len - case.seq_len // 8:] = 0
        # soft prompts lengthen every sequence, and so the logits
        long = case.micro_batch * (case.seq_len + (case.virtual_tokens if case.method in ("prompt", "ptuning") else 0))
        # (tokens x vocab) blocks of the hf loss, and the (4096 x 32768) tiles of TRL's chunked head
        logit_sizes = {n * v * k for n in (tokens, tokens - case.micro_batch, min(tokens, 4096), min(tokens - 1, 4096),
                                           long, long - case.micro_batch)
                       for v in (vocab, min(vocab, 32768), 32768, vocab % 32768 or vocab) for k in (1, 2, 4, 8)}
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        marks: dict[str, list[int]] = {}
        grads = opt_state = 0
        losses = []
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            cuda_base = torch.cuda.memory_allocated()
        t1 = time.perf_counter()
        with profile(activities=activities, profile_memory=True) as prof:
            for s in (1, 2):
                with record_function(f"ftc::s{s}::fwd"):
                    loss = forward_loss(model, ids, case.loss, mask)
                with record_function(f"ftc::s{s}::bwd"):
                    loss.backward()
                    # Trainer.training_step returns loss.detach(): the graph dies here, which matters
                    # where a Function keeps tensors on ctx (bitsandbytes MatMul8bitFp's ctx.A)
                    losses.append(float(loss.detach()))
                    del loss
                trainable = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                marks[f"s{s}::bwd"] = [p.grad.data_ptr() for p in trainable]
                grads = storage_bytes([p.grad for p in trainable])
                with record_function(f"ftc::s{s}::opt"):
                    optimizer.step()
                states = [t for st in optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
                marks[f"s{s}::opt"] = [t.data_ptr() for t in states if t.device.type == device]
                opt_state = storage_bytes(states)
                with record_function(f"ftc::s{s}::zero"):
                    optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        t_steps = time.perf_counter() - t1
        dyn = dynamic_components(prof, device, marks, logit_sizes)
        del prof
    m: dict[str, Any] = {**static, "gradients": grads, "optimizer": opt_state, **dyn}
    m["total"] = static["weights"] + dyn["peak_dynamic"]
    m["activations"] = dyn["max_by_category"]["act"]
    m["logits"] = dyn["max_by_category"]["logits"]
    m["optimizer_temp"] = dyn["max_by_category"]["opttemp"]
    m["rss_start"], m["rss_built"] = rss0, rss_built
    m["rss_max"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if device == "cuda":
        m["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
        m["cuda_max_reserved"] = torch.cuda.max_memory_reserved()
        m["cuda_base_allocated"] = cuda_base
        m["cuda_reserved_end"] = torch.cuda.memory_reserved()
        m["nvml_used"] = _nvml_used()  # at the end: context + what the caching allocator still holds
    # Sanity: after zero_grad only the optimizer state should still be live.
    m["check_end_minus_optstate"] = dyn["end_live"] - opt_state
    return {"measured": m, "losses": losses, "seconds": {"build": round(t_build, 2), "steps": round(t_steps, 2)}}


def _nvml_used() -> int | None:
    """Device memory in use according to the driver (includes the CUDA context), if pynvml is there."""
    try:
        import pynvml
    except ImportError:
        return None
    import torch

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if p.pid == os.getpid() and p.usedGpuMemory:
                return int(p.usedGpuMemory)
        return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    finally:
        pynvml.nvmlShutdown()


def selfcheck(device: str = "cpu") -> dict[str, Any]:
    """Allocate a known 100 MiB (and free it) inside the profiler: it must come back exactly."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts, profile_memory=True) as prof:
        with record_function("ftc::s1::fwd"):
            a = torch.empty(100 * MiB, dtype=torch.uint8, device=device)
            b = torch.ones(25 * MiB // 4, device=device)  # +25 MiB while a is live
            del b
        with record_function("ftc::s1::bwd"):
            del a
    dyn = dynamic_components(prof, device, {}, set())
    ok = dyn["peak_dynamic"] == 125 * MiB and dyn["end_live"] == 0
    return {"ok": ok, "peak_dynamic_mib": dyn["peak_dynamic"] / MiB, "end_live": dyn["end_live"]}


# ------------------------------------------------------------------------------ estimate

COMPONENTS = ("weights", "trainable", "gradients", "optimizer", "activations", "logits", "overhead", "total")


def at_peak(m: dict[str, Any]) -> dict[str, int]:
    """The measurement split like the estimator's Memory: each component as live at the peak.

    weights = frozen base weights (+ buffers and bitsandbytes quantization state), trainable =
    trainable parameters (all of them for full fine-tuning), then what the running sum held at
    its maximum: gradients, optimizer state, optimizer temporaries (foreach AdamW), logits-sized
    blocks, and everything else (activations kept for backward plus forward/backward temporaries).
    """
    live = m["peak_at"]
    out = {"weights": m["weights"] - m["weights_trainable"], "trainable": m["weights_trainable"],
           "gradients": live["live_grad"], "optimizer": live["live_optstate"],
           "optimizer_temp": live["live_opttemp"], "activations": live["live_act"],
           "logits": live["live_logits"], "total": m["total"]}
    if m.get("nvml_used"):
        # On a GPU: what the driver sees beyond the caching allocator (CUDA context, cuBLAS workspaces,
        # anything allocated outside PyTorch), counted into the total like the estimator's overhead.
        out["overhead"] = max(0, m["nvml_used"] - m["cuda_reserved_end"])
        out["total"] = m["total"] + out["overhead"]
    return out


def estimate(case: dict[str, Any], device: str) -> dict[str, Any] | str:
    """ftc's estimate for a stored case, or the reason there is none."""
    try:
        from ftc.compiler.estimate import RunShape, estimate_memory
    except Exception as e:  # not written yet, or broken: the measurements still stand
        return f"no estimator ({type(e).__name__}: {e})"
    try:
        extra = {}
        if "loss" in {f.name for f in dataclasses.fields(RunShape)}:  # hf vs TRL's fused head, where supported
            extra["loss"] = case["loss"]
        method = case["method"]
        if method in NEW_METHODS:  # the RunShape fields plan.shape_for fills for these kinds
            adapter = method == "llama_adapter"
            extra.update(
                train_layers=case.get("train_layers") if method in ("freeze", "linear_probe") else None,
                train_modules=tuple(m for m in case.get("train_modules", "").split(",") if m),
                train_head=case.get("train_head", False), virtual_tokens=case.get("virtual_tokens", 0),
                encoder_hidden=case.get("encoder_hidden", 0), adapter_layers=case.get("train_layers", 0) if adapter else 0)
            if method == "ia3":
                extra.update(ia3_feedforward=IA3_FEEDFORWARD)
        targets = IA3_TARGETS if method == "ia3" else case["lora_targets"]
        if case.get("padded"):
            extra["padded"] = True
        shape = RunShape(config=dict(MODELS[case["model"]]), method=method, lora_r=case["lora_r"],
                         lora_targets=targets, lora_dropout=case["lora_dropout"],
                         double_quant=case["double_quant"], dtype=case["dtype"], micro_batch=case["micro_batch"],
                         seq_len=case["seq_len"], gradient_checkpointing=case["gradient_checkpointing"],
                         optimizer=case["optimizer"], device=device, **extra)
        mem = estimate_memory(shape)
        out: dict[str, Any] = {c: int(getattr(mem, c)) for c in COMPONENTS if getattr(mem, c, None) is not None}
        if getattr(mem, "peak_phase", None):
            out["peak_phase"] = mem.peak_phase
        return out
    except Exception as e:
        return f"estimate failed ({type(e).__name__}: {e})"


def errors(est: dict[str, Any], measured: dict[str, Any]) -> dict[str, float]:
    """Signed error of the estimate in % of the measurement (live at the peak), per component.

    Components measured below 1 MiB get no relative error (a 256-byte buffer against 0 is -100%);
    `delta_<component>` is the difference in % of the measured total, defined for every component.
    """
    meas = at_peak(measured)
    out = {}
    for comp in COMPONENTS:
        if comp not in est or comp not in meas:
            continue
        if meas[comp] >= MiB:
            out[comp] = round(100.0 * (est[comp] - meas[comp]) / meas[comp], 1)
        if comp != "total":
            out[f"delta_{comp}"] = round(100.0 * (est[comp] - meas[comp]) / meas["total"], 1)
    return out


# ----------------------------------------------------------------------------------- run


def run_case(case: Case, device: str) -> dict[str, Any]:
    record: dict[str, Any] = {"key": case.key, "config": {**case.to_dict(), "shape": MODELS[case.model]},
                              "device": device}
    t0 = time.perf_counter()
    try:
        record.update(measure(case, device))
    except Exception as e:
        record["error"] = f"{type(e).__name__}: {e}"
        record["traceback"] = traceback.format_exc(limit=6)
    record.setdefault("seconds", {})["total"] = round(time.perf_counter() - t0, 2)
    import bitsandbytes
    import peft
    import torch
    import transformers

    record["env"] = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "bitsandbytes": bitsandbytes.__version__, "threads": torch.get_num_threads()}
    if "measured" in record:
        est = estimate(record["config"], device)
        if isinstance(est, dict):
            record["estimate"], record["error_pct"] = est, errors(est, record["measured"])
    return record


def in_child(job: Any, timeout: float) -> dict[str, Any]:
    """Run job() in a forked copy of this process and return its dict (or {"error": ...})."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run, send the result, leave without running the parent's cleanup
        os.close(read_fd)
        try:
            data = json.dumps(job()).encode()
        except BaseException as e:
            data = json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)
        os._exit(0)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    with os.fdopen(read_fd, "rb") as f:
        while True:
            ready, _, _ = select.select([f], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"timeout after {timeout:.0f} s"}
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"error": f"child died (wait status {status}; out of memory?)"}
    return json.loads(b"".join(chunks))


def run_isolated(case: Case, device: str, timeout: float, isolation: str) -> dict[str, Any]:
    """Run one case in a fresh process (a fork of this one, or a new interpreter) and return its record."""
    failed = {"key": case.key, "config": {**case.to_dict(), "shape": MODELS[case.model]}, "device": device}
    if isolation == "fork":
        r = in_child(lambda: run_case(case, device), timeout)
        return r if "key" in r else {**failed, **r}
    import subprocess

    cmd = [sys.executable, str(Path(__file__)), "--one", json.dumps(case.to_dict()), "--device", device]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**failed, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        return {**failed, "error": f"exit {out.returncode}: {out.stderr[-800:]}"}
    return json.loads(lines[-1])


def load_records(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return {r["key"]: r for r in records}


def save_records(path: Path, records: dict[str, dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records.values()))


# -------------------------------------------------------------------------------- report


def mib(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / MiB:,.0f}" if abs(n) >= 10 * MiB else f"{n / MiB:,.1f}" if n else "0"


def pct(e: float | None) -> str:
    return "–" if e is None else f"{e:+.0f}%"


def label(c: dict[str, Any]) -> str:
    extra = [] if c["dtype"] == "float32" else ["bf16" if c["dtype"] == "bfloat16" else "fp16"]
    extra += [] if c["loss"] == "hf" else ["trl-loss"]
    extra += [] if c["optimizer"] == "adamw_torch" else ["fused"]
    extra += [] if c["method"] not in LORA_FAMILY or c["lora_dropout"] else ["drop0"]
    extra += ["padded"] if c.get("padded") else []
    m = c["method"]
    if m in ("freeze", "linear_probe"):
        extra += [f"last {c['train_layers']}" + (f" [{c['train_modules']}]" if c.get("train_modules") else "")
                  + (" +head" if c.get("train_head") else "")] if m == "freeze" else []
    elif m in PROMPT_KINDS:
        extra += [f"{c['virtual_tokens']} tok" + (f" enc {c['encoder_hidden']}" if c.get("encoder_hidden") else "")]
    elif m == "llama_adapter":
        extra += [f"{c['virtual_tokens']} tok × {c['train_layers']} layers"]
    gc = "gc" if c["gradient_checkpointing"] else "–"
    return f"{c['model']} {c['method']} {c['micro_batch']}×{c['seq_len']} {gc}" + (f" {' '.join(extra)}" if extra else "")


def report(path: Path, device: str) -> str:
    """Markdown: one row per case, error statistics, then a component table per case.

    Estimates are recomputed now from the stored configurations, so a changed estimator needs no
    new measurements.
    """
    stored = load_records(path)
    check = stored.pop("_selfcheck", None)
    records = list(stored.values())
    order = {m: i for i, m in enumerate(MODELS)}
    records.sort(key=lambda r: (order.get(r["config"]["model"], 9), ALL_METHODS.index(r["config"]["method"]),
                                r["config"]["seq_len"] * r["config"]["micro_batch"], r["config"]["seq_len"],
                                r["config"]["gradient_checkpointing"], r["key"]))
    ok = [r for r in records if "measured" in r]
    note = None
    for r in ok:
        est = estimate(r["config"], device)
        if isinstance(est, dict):
            r["estimate"], r["error_pct"] = est, errors(est, r["measured"])
        else:
            r.pop("estimate", None), r.pop("error_pct", None)
            note = note or est
    env = ok[0].get("env", {}) if ok else {}
    lines = [f"{len(ok)} configurations on `{device}` (torch {env.get('torch', '?')}, transformers "
             f"{env.get('transformers', '?')}, peft {env.get('peft', '?')}, bitsandbytes {env.get('bitsandbytes', '?')}, "
             f"{env.get('threads', '?')} threads). MiB (2^20 bytes). `meas` = weights + peak of the allocation running "
             "sum over two steps. The component columns are what was live at that peak: `weights` frozen base "
             "(+ quantization state), `train` trainable parameters, `grads`, `optim` state (+ foreach temporaries "
             "after the `+`), `logits` (tokens × vocab blocks), `act` (everything else). `peak in` = the phase "
             "(s1/s2 = step 1/2; fwd, bwd, opt) and the estimator's own peak phase. Errors are (est − meas) / meas."]
    if check:
        lines.append(f"Self-check: a known 100 MiB + 25 MiB allocation measured as {check.get('peak_dynamic_mib')} MiB "
                     f"({'ok' if check.get('ok') else 'FAILED'}).")
    if note:
        lines.append(f"Estimates: none ({note}).")
    lines += ["", "| configuration | est | meas | err | weights | train | grads | optim | logits | act | peak in | s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in records:
        c = r["config"]
        if "measured" not in r:
            lines.append(f"| {label(c)} | | | | error: {str(r.get('error', '?'))[:90]} | | | | | | | |")
            continue
        m, est, err = r["measured"], r.get("estimate", {}), r.get("error_pct", {})
        a = at_peak(m)
        optim = mib(a["optimizer"]) + (f"+{mib(a['optimizer_temp'])}" if a["optimizer_temp"] else "")
        phase = m["peak_at"]["phase"] + (f" / {est['peak_phase']}" if est.get("peak_phase") else "")
        lines.append(f"| {label(c)} | {mib(est.get('total'))} | {mib(a['total'])} | {pct(err.get('total'))} | "
                     f"{mib(a['weights'])} | {mib(a['trainable'])} | {mib(a['gradients'])} | {optim} | "
                     f"{mib(a['logits'])} | {mib(a['activations'])} | {phase} | {r['seconds'].get('total', 0):.0f} |")
    if any(r.get("error_pct") for r in ok):
        lines += ["", "Error summary. Relative: |est − meas| / meas, over the configurations where the component "
                  "measured ≥ 1 MiB. Of total: |est − meas| of the component / measured total, over all.", "",
                  "| component | n | median rel. | max rel. | median of total | max of total |",
                  "|---|---:|---:|---:|---:|---:|"]
        for comp in COMPONENTS:
            rel = [abs(r["error_pct"][comp]) for r in ok if comp in r.get("error_pct", {})]
            tot = [abs(r["error_pct"][f"delta_{comp}"]) for r in ok if f"delta_{comp}" in r.get("error_pct", {})]
            if comp == "total":
                tot = rel
            if rel or tot:
                stat = lambda v, f: f"{f(v):.1f}%" if v else "–"  # noqa: E731
                lines.append(f"| {comp} | {len(tot)} | {stat(rel, statistics.median)} | {stat(rel, max)} | "
                             f"{stat(tot, statistics.median)} | {stat(tot, max)} |")
    lines += ["", "<details><summary>Per configuration: estimate vs measured, per component</summary>", ""]
    for r in ok:
        m, est, err = r["measured"], r.get("estimate", {}), r.get("error_pct", {})
        a = at_peak(m)
        lines += [f"**{label(r['config'])}**: {m['params_total'] / 1e6:.1f} M parameters "
                  f"({m['params_trainable'] / 1e6:.2f} M trainable); two steps {r['seconds'].get('steps', 0):.0f} s; "
                  f"peak in {m['peak_at']['phase']} (`{m['peak_at']['op']}`); full gradients "
                  f"{mib(m['gradients'])}, optimizer state {mib(m['optimizer'])}; own maxima: logits "
                  f"{mib(m['max_by_category']['logits'])}, act {mib(m['max_by_category']['act'])}, "
                  f"bitsandbytes temporaries {mib(m['bnb_temp_max'])}; process max RSS {mib(m['rss_max'])}",
                  "", "| component (live at peak) | estimate | measured | error | of total |", "|---|---:|---:|---:|---:|"]
        for comp in (*COMPONENTS[:4], "optimizer_temp", *COMPONENTS[4:]):
            if comp in a or comp in est:
                lines.append(f"| {comp} | {mib(est.get(comp))} | {mib(a.get(comp))} | {pct(err.get(comp))} | "
                             f"{pct(err.get(f'delta_{comp}'))} |")
        lines.append("")
    lines.append("</details>")
    return "\n".join(lines)


def write_readme(table: str, device: str) -> None:
    start, end = f"<!-- results:{device} -->", f"<!-- /results:{device} -->"
    text = README.read_text() if README.exists() else f"# Memory benchmarks\n\n{start}\n{end}\n"
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{start}\n{table}\n{end}{tail}")


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    csv = lambda kind: (lambda s: [kind(x) for x in s.split(",")])  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--models", type=csv(str), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--methods", type=csv(str), help=f"comma list of {', '.join(ALL_METHODS)}")
    p.add_argument("--seq", type=csv(int), help="sequence lengths, e.g. 128,512")
    p.add_argument("--mb", type=csv(int), help="micro-batch sizes, e.g. 1,4")
    p.add_argument("--gc", type=csv(lambda s: s in ("1", "on", "true")), help="gradient checkpointing: on, off or on,off")
    p.add_argument("--dtypes", type=csv(str), help=f"comma list of {', '.join(DTYPES)}")
    p.add_argument("--losses", type=csv(str), help="hf (full logits) and/or trl (SFTTrainer's chunked head)")
    p.add_argument("--optimizers", type=csv(str), help=f"comma list of {', '.join(OPTIMIZERS)}")
    p.add_argument("--padded", action="store_true", help="only the padded cases of the matrix")
    p.add_argument("--grid", action="store_true", help="cross product of the axis flags instead of filtering the default matrix")
    p.add_argument("--limit", type=int, help="run only the first N selected cases")
    p.add_argument("--skip-done", action="store_true", help="skip cases already measured in the results file")
    p.add_argument("--list", action="store_true", help="print the selected cases and exit")
    p.add_argument("--timeout", type=float, default=600, help="seconds per case")
    p.add_argument("--isolation", choices=("fork", "spawn"),
                   help="fork (default on CPU: a fork of this process, imports paid once) or spawn (default for cuda: "
                        "a new interpreter per case; CUDA cannot be used in a fork once initialized)")
    p.add_argument("--out", type=Path, help="results file (default results/<device>.jsonl)")
    p.add_argument("--report", action="store_true", help="print the tables and write them into README.md")
    p.add_argument("--selfcheck", action="store_true", help="check that a known 100 MiB allocation is measured")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = args.out or RESULTS / f"{args.device}.jsonl"
    args.isolation = args.isolation or ("fork" if args.device == "cpu" and hasattr(os, "fork") else "spawn")

    if args.one:
        print(json.dumps(run_case(Case(**json.loads(args.one)), args.device)))
        return 0
    if args.report:
        table = report(out, args.device)
        print(table)
        write_readme(table, args.device)
        return 0
    if args.selfcheck:
        result = selfcheck(args.device)
        print(json.dumps(result))
        return 0 if result["ok"] else 1
    records = load_records(out)
    cases = [c for c in select_cases(args) if not (args.skip_done and "measured" in records.get(c.key, {}))]
    if args.list:
        for c in cases:
            print(c.key)
        print(f"{len(cases)} cases")
        return 0
    if args.isolation == "fork":
        # Import once here so forked children start warm. No tensor work happens in this process,
        # so torch's OpenMP pool is never started before a fork.
        import bitsandbytes  # noqa: F401
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
        import trl.trainer.utils  # noqa: F401

        check = in_child(lambda: selfcheck(args.device), 120)
    else:
        import subprocess

        run = subprocess.run([sys.executable, __file__, "--selfcheck", "--device", args.device],
                             capture_output=True, text=True)
        check = json.loads(run.stdout.strip().splitlines()[-1])
    print(f"self-check (100 MiB + 25 MiB known allocation): {check}", flush=True)
    records["_selfcheck"] = {"key": "_selfcheck", **check}
    t0 = time.perf_counter()
    for n, case in enumerate(cases, 1):
        r = run_isolated(case, args.device, args.timeout, args.isolation)
        records[case.key] = r
        save_records(out, records)
        m = r.get("measured")
        desc = (f"total {mib(m['total'])} MiB (weights {mib(m['weights'])}, +{mib(m['peak_dynamic'])} in "
                f"{m['peak_at']['phase']}), est {mib(r.get('estimate', {}).get('total'))}" if m
                else f"ERROR {str(r.get('error', ''))[:300]}")
        print(f"[{n}/{len(cases)} {time.perf_counter() - t0:5.0f}s] {case.key}: {desc} "
              f"({r.get('seconds', {}).get('total', 0):.1f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
