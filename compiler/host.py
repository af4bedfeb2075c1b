"""What the compiling machine's CPU offers for training, read from /proc/cpuinfo without torch.

A spec with `device = "cpu"` is compiled, as a rule, on the machine that trains it (`ftc run`
compiles and runs in one go), so the planner may use the CPU it finds: bf16 is planned where the
CPU multiplies bf16 natively (AMX tiles or AVX-512 BF16 instructions), fp32 elsewhere. To compile
for another machine, or to pin the fact (the tests and golden files do), set FTC_CPU_FLAGS to that
machine's flags, as /proc/cpuinfo's `flags` line lists them (`FTC_CPU_FLAGS=""`: none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CPU_FLAGS_ENV = "FTC_CPU_FLAGS"
CPUINFO = Path("/proc/cpuinfo")
# Most capable first: AMX's tile matmul (Sapphire Rapids and later), then AVX-512 BF16's dot products
# (Cooper Lake, Zen 4). oneDNN, which torch's CPU matmuls call, uses either for bf16 GEMMs.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class HostFacts:
    """The CPU flags the planner reads, and where they came from (for the plan's reasons)."""

    flags: frozenset[str] = frozenset()
    source: str = "not read"

    @property
    def bf16_matmul(self) -> str | None:
        """The first flag of BF16_FLAGS the CPU has: it multiplies bf16 natively (None: emulated, slow)."""
        return next((flag for flag in BF16_FLAGS if flag in self.flags), None)


def host_facts() -> HostFacts:
    """FTC_CPU_FLAGS when set, else the first `flags` line of /proc/cpuinfo (none where it cannot be read)."""
    pinned = os.environ.get(CPU_FLAGS_ENV)
    if pinned is not None:
        return HostFacts(frozenset(pinned.split()), CPU_FLAGS_ENV)
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return HostFacts(frozenset(), f"{CPUINFO} could not be read")
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return HostFacts(frozenset(value.split()), f"{CPUINFO}: the compiling machine, which trains a CPU spec "
                             f"as a rule; {CPU_FLAGS_ENV} names another's flags")
    return HostFacts(frozenset(), f"{CPUINFO} lists no flags")
