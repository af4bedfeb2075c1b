"""Memory of the process training a run: GPU memory through NVML when the process holds any,
its resident memory (RSS) otherwise. The process is found by its command line, which names
RUN_DIR/train.py (`ftc run` and `python train.py RUN_DIR` both do), so the monitor needs no
process id from the run and attaches to a run it did not start. No Textual, no torch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MemorySample:
    pid: int
    bytes: int
    source: str
    """'gpu' (NVML: memory the process holds on its GPUs) or 'rss' (resident memory in RAM)."""


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _cwd(pid: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def find_training_process(run_dir: str | os.PathLike[str]) -> int | None:
    """The id of the python process running RUN_DIR/train.py, or None (finished, crashed, elsewhere).
    Reads /proc, so it finds processes on Linux only."""
    script = (Path(run_dir) / "train.py").resolve()
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        scripts = [arg for arg in _cmdline(pid) if arg.endswith("train.py")]
        base = _cwd(pid) if scripts else None
        for arg in scripts:
            path = Path(arg)
            if not path.is_absolute():
                if base is None:
                    continue
                path = base / path
            try:
                if path.resolve() == script:
                    found.append(pid)
            except OSError:
                continue
    return min(found) if found else None  # the first started (a launcher before its workers)


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process (psutil when installed, else /proc/PID/status)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except (psutil.Error, OSError):
            return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class _Nvml:
    """GPU memory per process through NVML (the nvidia-ml-py package), when a driver is present."""

    def __init__(self) -> None:
        self.lib: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.lib = pynvml
        except Exception:  # noqa: BLE001 - no package, no driver, no GPU: fall back to RSS
            self.lib = None

    def used_by(self, pid: int) -> int | None:
        if self.lib is None:
            return None
        nv = self.lib
        total, seen = 0, False
        try:
            for index in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(index)
                for process in nv.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid and process.usedGpuMemory is not None:
                        total += int(process.usedGpuMemory)
                        seen = True
        except Exception:  # noqa: BLE001 - a driver error mid-run: report RSS instead
            return None
        return total if seen else None


class MemorySampler:
    """Samples the memory of the process training `run_dir`; cheap enough to call every second."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._pid: int | None = None
        self._nvml: _Nvml | None = None
        self._scanned = -1e9

    RESCAN_S = 5.0
    """Seconds between looks through /proc while no process is found."""

    def sample(self) -> MemorySample | None:
        """The current sample, or None when no process is training this run."""
        if self._pid is not None and not Path(f"/proc/{self._pid}").exists():
            self._pid = None
        if self._pid is None and time.monotonic() - self._scanned >= self.RESCAN_S:
            self._scanned = time.monotonic()
            self._pid = find_training_process(self.run_dir)
        if self._pid is None:
            return None
        if self._nvml is None:
            self._nvml = _Nvml()
        gpu = self._nvml.used_by(self._pid)
        if gpu is not None:
            return MemorySample(self._pid, gpu, "gpu")
        rss = rss_bytes(self._pid)
        if rss is None:
            self._pid = None
            return None
        return MemorySample(self._pid, rss, "rss")
