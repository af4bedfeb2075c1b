"""Step timer for benchmarks/throughput.py, loaded into every measured process through PYTHONPATH.

It edits nothing the tool runs: two global torch hooks only observe. A forward hook on the decoder
backbone (the model's `embed_tokens` holder, e.g. LlamaModel, which its causal LM calls as a module
whichever wrapper calls the causal LM: PEFT's tuner calls `model.forward` directly, so a hook on the
causal LM itself saw no forward under LLaMA-Factory and Axolotl) counts the tokens a training forward
sees (the attention mask's ones, or every position of a padding-free row), and an optimizer step hook
writes one line per optimizer step: wall-clock time and the tokens since the previous step.
Every tool measured here (ftc's train.py, TRL, Unsloth, LLaMA-Factory, Axolotl) trains a
transformers model with a torch optimizer, so the same two hooks time them all alike.
"""

import json
import os
import time

_PATH = os.environ.get("FTC_BENCH_STEPS")


def _install() -> None:
    import torch
    from torch.nn.modules.module import register_module_forward_hook
    from torch.optim.optimizer import register_optimizer_step_post_hook

    state = {"tokens": 0, "padded": 0, "steps": 0}
    out = open(_PATH, "a", buffering=1)  # noqa: SIM115 - open for the life of the process

    def on_forward(module, args, kwargs, output):  # noqa: ARG001 - the hook's signature
        if not (module.training and torch.is_grad_enabled() and hasattr(module, "embed_tokens")
                and not type(module).__name__.startswith("Peft")):
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not isinstance(ids, torch.Tensor):
            return
        mask = kwargs.get("attention_mask")
        real = int(mask.sum()) if isinstance(mask, torch.Tensor) and mask.dim() == 2 else ids.numel()
        state["tokens"] += real
        state["padded"] += ids.numel()

    def on_step(optimizer, args, kwargs):  # noqa: ARG001 - the hook's signature
        state["steps"] += 1
        out.write(json.dumps({"step": state["steps"], "t": time.time(), "tokens": state["tokens"],
                              "positions": state["padded"]}) + "\n")
        state["tokens"] = state["padded"] = 0

    register_module_forward_hook(on_forward, with_kwargs=True)
    register_optimizer_step_post_hook(on_step)


if _PATH:
    import importlib.abc
    import importlib.machinery
    import sys

    class _AfterTorch(importlib.abc.MetaPathFinder):
        """Installs the hooks right after torch.optim is first imported (not before: torch may never load)."""

        def find_spec(self, name, path, target=None):  # noqa: ARG002
            if name != "torch.optim.optimizer":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_hook(module):
                exec_module(module)
                sys.modules[name] = module
                _install()

            loader.exec_module = exec_and_hook
            return spec

    sys.meta_path.insert(0, _AfterTorch())
