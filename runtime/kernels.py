"""The start-of-run check of the CUDA kernels the plan chose (compiler/plan/kernels.py): each planned package
must import here, or the run stops before loading anything with what is missing, why it was planned, and how
to fix it (install it, or recompile where it is absent so the planner chooses without it)."""

from __future__ import annotations

import importlib

# attn_implementation / setting -> (import name, pip distribution)
PACKAGES = {"flash_attention_2": ("flash_attn", "flash-attn"), "liger": ("liger_kernel", "liger-kernel")}


class KernelMissing(Exception):
    """A kernel package the plan chose does not import (a message for the user, no traceback)."""


def require_kernels(*, attention: str, liger: bool) -> None:
    """Import each package the plan chose: flash-attn for attention = flash_attention_2, liger-kernel for liger."""
    wanted = ([("ATTENTION = \"flash_attention_2\"", *PACKAGES["flash_attention_2"])] if attention in PACKAGES else [])
    wanted += [("LIGER_KERNEL = True", *PACKAGES["liger"])] if liger else []
    for setting, module, dist in wanted:
        try:
            importlib.import_module(module)
        except Exception as error:  # ImportError, or a build for another torch/CUDA failing as it loads
            raise KernelMissing(
                f"the plan chose {setting} (see plan.md), but `import {module}` fails here: "
                f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no message'}; install it "
                f"(pip install {dist}) in the environment that runs train.py, or recompile the spec there "
                f"(ftc compile picks without it), or set it off in [hardware]") from None
