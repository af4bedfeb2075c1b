"""Fault injection, so the test suite drives every recovery path on a CPU.

Set FTC_INJECT to a comma-separated list of FAULT@STEP; the training script then adds the callback
ftc.runtime.inject.FaultInjection, which raises each fault once, at that optimizer step (1-based):

  oom@5        torch.OutOfMemoryError at the start of step 5 (what CUDA raises; `ftc run` retries
               with half the micro-batch)
  nan@3        NaN gradients in step 3 (as a NaN loss gives; the [train] on_nan policy acts)
  crash@7      SIGKILL of the training process at the start of step 7 (as kill -9 or a power loss)
  savecrash@4  SIGKILL while checkpoint 4 is written, before it is published
  sigterm@4    SIGTERM to the training process during step 4 (as a scheduler's preemption)
  sigint@4     SIGINT (Ctrl-C) during step 4
  diskfull@4   the free-space check before checkpoint 4 sees a full disk
  enospc@4     writing checkpoint 4 fails with "No space left on device"

With several processes every rank raises the faults, unless FTC_INJECT_RANK=R names the one that does
(one rank out of memory, or with NaN gradients, while the others are well).

`ftc run` passes FTC_INJECT to the script and leaves out the faults already raised (recorded as
`fault` events) when it restarts the script after one, so each fault happens once per run.
"""

from __future__ import annotations

import os

KINDS = ("oom", "nan", "crash", "savecrash", "sigterm", "sigint", "diskfull", "enospc")
ENV = "FTC_INJECT"
RANK_ENV = "FTC_INJECT_RANK"


def parse(text: str) -> list[tuple[str, int]]:
    """[(fault, step)] from "oom@5,nan@3"; ValueError with the bad item and the valid forms."""
    faults = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        kind, _, step = item.partition("@")
        if kind not in KINDS or not step.isdigit() or int(step) < 1:
            raise ValueError(f"{ENV}: cannot read {item!r}; use FAULT@STEP with FAULT one of {', '.join(KINDS)} "
                             "and STEP a positive integer, e.g. FTC_INJECT=oom@5,nan@3")
        faults.append((kind, int(step)))
    return faults


def without(text: str, fired: list[tuple[str, int]]) -> str:
    done = set(fired)
    return ",".join(f"{k}@{s}" for k, s in parse(text) if (k, s) not in done)


class Faults:
    """The faults still to raise in this process."""

    def __init__(self, text: str | None = None) -> None:
        self.pending = set(parse(os.environ.get(ENV, "") if text is None else text))
        only = os.environ.get(RANK_ENV, "")
        if only.strip() and only.strip() != os.environ.get("RANK", "0"):
            self.pending.clear()

    def take(self, kind: str, step: int) -> bool:
        """True once if `kind` is due at `step`."""
        if (kind, step) in self.pending:
            self.pending.discard((kind, step))
            return True
        return False
