"""What the compiling machine's CPU offers for training, read from /proc/cpuinfo without torch.

A spec with `device = "cpu"` is compiled, as a rule, on the machine that trains it (`ftc run`
compiles and runs in one go), so the planner may use the CPU it finds: bf16 is planned where the
CPU multiplies bf16 natively (AMX tiles or AVX-512 BF16 instructions), fp32 elsewhere. To compile
for another machine, or to pin the fact (the tests and golden files do), set FTC_CPU_FLAGS to that
machine's flags, as /proc/cpuinfo's `flags` line lists them (`FTC_CPU_FLAGS=""`: none).

The same holds for the optional CUDA speed packages (flash-attn, liger-kernel): the planner chooses them
where the compiling environment has them installed (importlib.metadata, never an import: the compiler
does not load torch), since `ftc run` trains in that environment; FTC_PACKAGES names another's
("flash-attn liger-kernel"; `FTC_PACKAGES=""`: none of them).
"""

from __future__ import annotations

import os
from importlib import metadata
from dataclasses import dataclass
from pathlib import Path

CPU_FLAGS_ENV = "FTC_CPU_FLAGS"
CPUINFO = Path("/proc/cpuinfo")
# Most capable first: AMX's tile matmul (Sapphire Rapids and later), then AVX-512 BF16's dot products
# (Cooper Lake, Zen 4). oneDNN, which torch's CPU matmuls call, uses either for bf16 GEMMs.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
PACKAGES_ENV = "FTC_PACKAGES"
SPEED_PACKAGES = ("flash-attn", "liger-kernel")
"""The distributions the planner looks for: FlashAttention-2's kernels and Liger's Triton kernels."""


@dataclass(frozen=True)
class HostFacts:
    """The CPU flags the planner reads, and where they came from (for the plan's reasons)."""

    flags: frozenset[str] = frozenset()
    source: str = "not read"
    packages: frozenset[str] = frozenset()
    """The SPEED_PACKAGES installed where the run trains (distribution names as pip writes them)."""
    packages_source: str = "not read"

    @property
    def bf16_matmul(self) -> str | None:
        """The first flag of BF16_FLAGS the CPU has: it multiplies bf16 natively (None: emulated, slow)."""
        return next((flag for flag in BF16_FLAGS if flag in self.flags), None)


def host_facts() -> HostFacts:
    """The CPU's flags (cpu_flags) and the speed packages installed (speed_packages)."""
    flags, source = cpu_flags()
    packages, packages_source = speed_packages()
    return HostFacts(flags, source, packages, packages_source)


def speed_packages() -> tuple[frozenset[str], str]:
    """FTC_PACKAGES when set, else the SPEED_PACKAGES whose distribution metadata this environment has."""
    pinned = os.environ.get(PACKAGES_ENV)
    if pinned is not None:
        return frozenset(pinned.split()), PACKAGES_ENV
    found = set()
    for name in SPEED_PACKAGES:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
    return frozenset(found), (f"the compiling environment's installed packages, where ftc run trains; "
                              f"{PACKAGES_ENV} names another's")


def cpu_flags() -> tuple[frozenset[str], str]:
    """FTC_CPU_FLAGS when set, else the first `flags` line of /proc/cpuinfo (none where it cannot be read)."""
    pinned = os.environ.get(CPU_FLAGS_ENV)
    if pinned is not None:
        return frozenset(pinned.split()), CPU_FLAGS_ENV
    try:
        text = CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset(), f"{CPUINFO} could not be read"
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split()), (f"{CPUINFO}: the compiling machine, which trains a CPU spec as a "
                                              f"rule; {CPU_FLAGS_ENV} names another's flags")
    return frozenset(), f"{CPUINFO} lists no flags"
